/**
 * Rooms: every message sent to a room reaches every member. This is the first version everybody
 * writes: a Map from room to its sockets, in this process's memory. It works on one server, on a good
 * network, with fast clients. Run three instances behind a load balancer and members on the other two
 * hear nothing; let a phone go through a tunnel and its socket stays in the Map for hours; let one
 * client stop reading and this process buffers everything for it until it runs out of memory.
 *
 * The gateway (server/gateway.ts) has already parsed and checked every frame; this file decides who
 * may connect, who gets what, and when to let go of a connection.
 */
import type { IncomingMessage } from 'node:http';
import type { Admission, Client, HubOptions, RoomHub } from '../server/hub.ts';
import { encode, type MessageFrame } from '../server/protocol.ts';
import { decodeToken } from '../server/token.ts';

// `options` holds two Redis connections, a clock and the limits; this version uses none of them.
export function createRoomHub(_options: HubOptions): RoomHub {
  const rooms = new Map<string, Set<Client>>();
  let sequence = 0;

  return {
    admit(req: IncomingMessage): Admission {
      // TODO(lab): anyone may connect, as anyone, from any web page. Check the token's signature and
      // expiry (401) and the browser's Origin (403) here, before the handshake.
      const token = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
      return { ok: true, user: (token && decodeToken(token)) || 'guest' };
    },

    connect(_client: Client): void {
      // TODO(lab): nothing notices a connection whose other end is gone (no ping, no pong, no timeout).
    },

    async join(client: Client, room: string, _lastId?: string): Promise<void> {
      // TODO(lab): a client coming back with `lastId` gets nothing of what it missed.
      let members = rooms.get(room);
      if (!members) {
        members = new Set();
        rooms.set(room, members);
      }
      members.add(client);
    },

    async leave(client: Client, room: string): Promise<void> {
      rooms.get(room)?.delete(client);
      if (rooms.get(room)?.size === 0) rooms.delete(room);
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
      // TODO(lab): only the members connected to THIS instance get it; and send() queues in memory
      // for a client that does not read, without limit.
      for (const member of rooms.get(room) ?? []) member.socket.send(encode(frame));
    },

    disconnect(client: Client): void {
      for (const [room, members] of rooms) {
        members.delete(client);
        if (members.size === 0) rooms.delete(room);
      }
    },

    async close(): Promise<void> {
      rooms.clear();
    },
  };
}
