/**
 * A WebSocket load generator, built on ws (autocannon speaks HTTP only). Clients are spread round-robin
 * over the instances and over the rooms; messages go out at a fixed rate whatever the server does (an
 * open loop, so a slow server shows up as latency, not as fewer messages sent). Each message carries
 * the time it was sent, so every member that receives it adds one publish-to-receive latency sample.
 *
 * Optionally one more client joins every room and then stops reading: the slow client whose cost the
 * lab is about. It is not counted in delivered/expected.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { WebSocket } from 'ws';
import type { RateFigures } from '@labs/bench';
import type { ServerFrame } from '../server/protocol.ts';

export interface WsLoadOptions {
  /** Row label. */
  name: string;
  /** ws:// URLs of the instances, without query; client i connects to urls[i % urls.length]. */
  urls: string[];
  /** A token for `user`: appended as ?token=. */
  token(user: string): string;
  clients: number;
  rooms: number;
  durationSec: number;
  /** Messages sent per second, in total. */
  rate: number;
  /** Size of each message's text. */
  messageBytes: number;
  /** Add one client that joins every room and never reads. */
  slowClient: boolean;
  /** Called every 250 ms while messages flow (e.g. to sample the servers' memory). */
  sample?: () => Promise<void>;
}

/** One run's figures: the bench kit's MESSAGES figures (deliveries per second of sending, publish-to-receive ms, connection errors) and the counts behind them. */
export interface WsLoadResult extends RateFigures {
  name: string;
  durationSec: number;
  /** Event-loop utilisation of the load generator, 0..1. */
  loadGeneratorBusy: number;
  clients: number;
  sent: number;
  delivered: number;
  /** Sent messages times the members of their room (the slow client not counted). */
  expected: number;
  /** How the slow client's connection ended: its close code, or "open" if the server kept it. */
  slowClientEnd: string;
}

interface Member {
  ws: WebSocket;
  room: string;
  frames: number;
}

/** The value at quantile `q` of `sorted`. */
const quantile = (sorted: Float64Array, q: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);

/** Opens a connection and resolves once the server's welcome frame came. */
function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('message', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
}

/** Sends a join and resolves on the joined frame. */
function joinRoom(ws: WebSocket, room: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as ServerFrame;
      if (frame.type === 'joined' && frame.room === room) {
        ws.off('message', onMessage);
        resolve();
      } else if (frame.type === 'error') {
        ws.off('message', onMessage);
        reject(new Error(`join ${room}: ${frame.detail}`));
      }
    };
    ws.on('message', onMessage);
    ws.send(JSON.stringify({ type: 'join', room }));
  });
}

export async function runWsLoad(options: WsLoadOptions): Promise<WsLoadResult> {
  const { name, urls, clients, rooms, durationSec, rate, messageBytes } = options;
  // Room i % rooms, instance (i / rooms) % instances: every room has members on every instance.
  const urlOf = (i: number, user: string) =>
    `${urls[Math.floor(i / rooms) % urls.length]}?token=${options.token(user)}`;
  process.stderr.write(`  ${name.padEnd(28)} `);
  const roomName = (i: number) => `bench-${i % rooms}`;
  const membersOf = new Map<string, number>();
  const latencies: number[] = [];
  let delivered = 0;
  let errors = 0;

  // Connect in batches: a few hundred handshakes at once would measure the accept queue, not the rooms.
  const members: Member[] = [];
  for (let start = 0; start < clients; start += 50) {
    const batch = Array.from({ length: Math.min(50, clients - start) }, async (_, k) => {
      const i = start + k;
      const ws = await open(urlOf(i, `user-${i}`));
      const member: Member = { ws, room: roomName(i), frames: 0 };
      await joinRoom(ws, member.room);
      membersOf.set(member.room, (membersOf.get(member.room) ?? 0) + 1);
      ws.on('message', (data: Buffer) => {
        const frame = JSON.parse(data.toString()) as ServerFrame;
        if (frame.type === 'message') {
          delivered++;
          member.frames++;
          latencies.push(performance.now() - Number(frame.text.slice(0, frame.text.indexOf('|'))));
        } else if (frame.type === 'error') errors++;
      });
      ws.on('error', () => errors++);
      return member;
    });
    members.push(...(await Promise.all(batch)));
  }

  let slow: WebSocket | undefined;
  let slowEnd = 'none';
  if (options.slowClient) {
    slow = await open(urlOf(clients, 'slow'));
    for (let r = 0; r < Math.min(rooms, 50); r++) await joinRoom(slow, roomName(r));
    slow.on('close', (code) => {
      slowEnd = String(code);
    });
    slow.on('error', () => {});
    (slow as unknown as { _socket: Socket })._socket.pause();
  }

  const padding = 'x'.repeat(Math.max(0, messageBytes - 24));
  let sent = 0;
  let expected = 0;
  let nextSender = 0;
  const busyBefore = performance.eventLoopUtilization();
  const started = performance.now();
  const ticker = setInterval(() => process.stderr.write('.'), 1000);
  const sampler = setInterval(() => void options.sample?.(), 250);
  // Every 10 ms, send what the rate says is due by now: the schedule does not wait for the server.
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = performance.now() - started;
      if (elapsed >= durationSec * 1000) {
        clearInterval(tick);
        resolve();
        return;
      }
      const due = Math.floor((elapsed / 1000) * rate);
      for (; sent < due; sent++) {
        const member = members[nextSender++ % members.length];
        if (!member || member.ws.readyState !== WebSocket.OPEN) continue;
        const text = `${performance.now().toFixed(3)}|${padding}`;
        member.ws.send(JSON.stringify({ type: 'send', room: member.room, text }));
        expected += membersOf.get(member.room) ?? 0;
      }
    }, 10);
  });
  clearInterval(sampler);
  const sendSec = (performance.now() - started) / 1000;
  // Let in-flight messages land: until everything expected arrived, or nothing arrived for a second.
  for (let last = -1, quietSince = performance.now(); delivered < expected; ) {
    if (delivered !== last) [last, quietSince] = [delivered, performance.now()];
    if (performance.now() - quietSince > 1000) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const busy = performance.eventLoopUtilization(busyBefore).utilization;
  clearInterval(ticker);

  if (slow) {
    // Read what the server kept for it, then its close frame if there is one.
    (slow as unknown as { _socket: Socket })._socket.resume();
    for (let waited = 0; slowEnd === 'none' && waited < 2000; waited += 20) await new Promise((r) => setTimeout(r, 20));
    if (slowEnd === 'none') slowEnd = 'open';
    slow.terminate();
  }
  await Promise.all(
    members.map(
      ({ ws }) =>
        new Promise((resolve) => {
          ws.once('close', resolve);
          ws.terminate();
        }),
    ),
  );

  const sorted = Float64Array.from(latencies).sort();
  process.stderr.write(` ${Math.round(delivered / sendSec)} delivered/s, generator busy ${Math.round(busy * 100)}%\n`);
  return {
    name,
    // Per second of sending: what arrives while draining was sent during it.
    perSec: delivered / sendSec,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    failed: errors,
    durationSec: sendSec,
    loadGeneratorBusy: busy,
    clients,
    sent,
    delivered,
    expected,
    slowClientEnd: slowEnd,
  };
}
