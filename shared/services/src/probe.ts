/**
 * Protocol-level probes: "something answers on this port" is not enough (another program may hold
 * 6379), so each probe sends the smallest greeting its protocol defines and checks the first bytes back.
 */
import { connect } from 'node:net';
import type { ServiceKind } from './kinds.ts';

/** Greeting to send and a test for the reply, per protocol. */
const HANDSHAKES: Record<ServiceKind, { hello: Buffer; answers(reply: Buffer): boolean }> = {
  // RESP inline command; a password-protected server answers -NOAUTH, which still proves it is Redis.
  redis: {
    hello: Buffer.from('PING\r\n'),
    answers: (r) => r[0] === 0x2b /* + */ || r.toString().startsWith('-NOAUTH'),
  },
  // SSLRequest: length 8, code 80877103. A Postgres server answers a single 'S' or 'N'.
  postgres: {
    hello: Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]),
    answers: (r) => r.length >= 1 && (r[0] === 0x53 || r[0] === 0x4e),
  },
  // AMQP 0-9-1 protocol header; the broker replies with a Connection.Start method frame (type 1).
  rabbitmq: { hello: Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1]), answers: (r) => r[0] === 1 },
  // Kafka ApiVersions v0 request; any length-prefixed reply means a broker is there.
  kafka: {
    hello: Buffer.from([0, 0, 0, 0x0f, 0, 0x12, 0, 0, 0, 0, 0, 1, 0, 5, 0x6c, 0x61, 0x62, 0x73, 0x2d]),
    answers: (r) => r.length >= 4,
  },
};

/**
 * Resolves true when a server of `kind` answers at host:port within `timeoutMs`, false otherwise.
 * Never rejects, never hangs past the timeout.
 */
export function probe(kind: ServiceKind, host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  const { hello, answers } = HANDSHAKES[kind];
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => socket.write(hello));
    socket.once('data', (reply: Buffer) => done(answers(reply)));
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

/** Host and port of a service URL (or a Kafka `host:port[,host:port]` list: the first broker). */
export function hostAndPort(kind: ServiceKind, url: string): { host: string; port: number } {
  if (kind === 'kafka') {
    const [first = ''] = url.split(',');
    const [host = '127.0.0.1', port = '9092'] = first.trim().split(':');
    return { host, port: Number(port) };
  }
  const parsed = new URL(url);
  const defaults: Record<string, number> = { redis: 6379, postgres: 5432, rabbitmq: 5672 };
  return { host: parsed.hostname || '127.0.0.1', port: Number(parsed.port) || (defaults[kind] ?? 0) };
}
