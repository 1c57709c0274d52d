/**
 * Which servers a run would use, and their versions, as one short line: part of the cache key of
 * `lab test`, so that a result verified against Redis 7 is not replayed for Redis 8, nor a result from a
 * server at one URL for another. Cheap on purpose (a second or less): it looks at what already answers
 * and starts nothing.
 */
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type ServiceKind, SERVICE_KINDS, SERVICES } from './kinds.ts';
import { pinnedKafkaVersion } from './providers/kafka-assemble.ts';
import { hostAndPort, probe } from './probe.ts';

const TIMEOUT_MS = 1500;

/** Resolves with `promise`, or with `fallback` after {@link TIMEOUT_MS}. */
function within<T>(promise: Promise<T>, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.catch(() => fallback),
    new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), TIMEOUT_MS))),
  ]).finally(() => clearTimeout(timer));
}

async function redisVersion(url: string): Promise<string> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
  } finally {
    redis.disconnect();
  }
}

async function postgresVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: TIMEOUT_MS });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** RabbitMQ names its version in the server properties of the Connection.Start frame it greets with. */
function rabbitVersion(url: string): Promise<string> {
  const { host, port } = hostAndPort('rabbitmq', url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    socket.once('connect', () => socket.write(Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1])));
    socket.once('data', (reply: Buffer) => {
      socket.destroy();
      resolve(/version[\s\S]{2,6}?(\d+\.\d+[\d.]*)/.exec(reply.toString('latin1'))?.[1] ?? '?');
    });
    socket.once('error', reject);
  });
}

const VERSION_OF: Record<ServiceKind, (url: string) => Promise<string>> = {
  redis: redisVersion,
  postgres: postgresVersion,
  rabbitmq: rabbitVersion,
  // kafkajs has no version call; the URL says which broker, and a broker the labs start is the pinned one.
  kafka: async () => '',
};

/** One kind's part: where it would come from, and the version answering there. */
async function fingerprintOf(kind: ServiceKind): Promise<string> {
  const { envVar, defaultUrl, defaultPort } = SERVICES[kind];
  const url = process.env[envVar]?.trim() || ((await probe(kind, '127.0.0.1', defaultPort, 500)) ? defaultUrl : '');
  const forced = process.env.LABS_PROVIDER ? `,forced:${process.env.LABS_PROVIDER}` : '';
  if (!url) {
    // A server the labs would start: which one depends on what is installed; Kafka's is the pinned one,
    // whether it is assembled yet or not (a first run assembles it: the second must still hit the cache).
    const started = kind === 'kafka' ? `kafka ${pinnedKafkaVersion()}` : 'started';
    return `${kind}=${started}${forced}`;
  }
  return `${kind}=${url}@${await within(VERSION_OF[kind](url), '?')}${forced}`;
}

/** The fingerprint of every service kind, e.g. `redis=redis://127.0.0.1:6379@7.0.15;postgres=…`. */
export async function serviceFingerprint(): Promise<string> {
  return (await Promise.all(SERVICE_KINDS.map(fingerprintOf))).join(';');
}
