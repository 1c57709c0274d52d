/**
 * WRONG FIX: members on this instance get the message at once, straight from memory, and Redis pub/sub
 * carries it to the other instances. But this instance is subscribed to the room's channel too, so its
 * own members hear every local message twice: once from the loop, once from Redis. Exactly once means
 * one path: publish, and deliver only what comes back from the subscription.
 *
 * @catches across three instances every member receives every message exactly once
 */
import type { IncomingMessage } from 'node:http';
import type { Admission, Client, HubOptions, RoomHub } from '../../server/hub.ts';
import { encode, type MessageFrame } from '../../server/protocol.ts';
import { decodeToken } from '../../server/token.ts';

export function createRoomHub(options: HubOptions): RoomHub {
  const { redis, subscriber, prefix } = options;
  const rooms = new Map<string, Set<Client>>();
  const channelOf = (room: string) => `${prefix}room:${room}`;
  let sequence = 0;

  const broadcast = (frame: MessageFrame) => {
    for (const member of rooms.get(frame.room) ?? []) member.socket.send(encode(frame));
  };
  subscriber.on('message', (_channel: string, payload: string) => broadcast(JSON.parse(payload) as MessageFrame));

  return {
    admit(req: IncomingMessage): Admission {
      const token = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
      return { ok: true, user: (token && decodeToken(token)) || 'guest' };
    },
    connect(_client: Client): void {},
    async join(client: Client, room: string, _lastId?: string): Promise<void> {
      let members = rooms.get(room);
      if (!members) {
        members = new Set();
        rooms.set(room, members);
        await subscriber.subscribe(channelOf(room));
      }
      members.add(client);
    },
    async leave(client: Client, room: string): Promise<void> {
      rooms.get(room)?.delete(client);
    },
    async send(client: Client, room: string, text: string): Promise<void> {
      const frame: MessageFrame = {
        type: 'message',
        room,
        id: `${Date.now()}-${sequence++}`,
        from: client.user,
        text,
        at: Date.now(),
      };
      broadcast(frame); // the local members, without waiting for Redis
      await redis.publish(channelOf(room), JSON.stringify(frame)); // everyone else
    },
    disconnect(client: Client): void {
      for (const members of rooms.values()) members.delete(client);
    },
    async close(): Promise<void> {
      rooms.clear();
    },
  };
}
