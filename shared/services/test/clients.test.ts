/**
 * The clients as labs get them, against real servers: a pg pool whose clients survive a dead
 * connection, and the outage tests, which must name the service an error came from (a refused
 * connection is ECONNREFUSED from every client library; kafkajs keeps that code on errors of its own).
 */
import { randomBytes } from 'node:crypto';
import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createPgPool,
  createRedisClient,
  DeadlineError,
  dropDatabase,
  ensureDatabase,
  freePort,
  fromService,
  isKafkaOutage,
  isPostgresOutage,
  isRabbitOutage,
  isRedisOutage,
  resolveService,
  stopServices,
  withinDeadline,
} from '../src/index.ts';

afterAll(stopServices);

/** Which services' outage tests accept `error`: exactly one for an outage, none for a bug. */
const namedBy = (error: unknown) =>
  Object.entries({
    postgres: isPostgresOutage,
    redis: isRedisOutage,
    rabbitmq: isRabbitOutage,
    kafka: isKafkaOutage,
  })
    .filter(([, test]) => test(error))
    .map(([service]) => service);

/** The rejection of `work` (fails the test if it resolves). */
async function failureOf(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure, got an answer');
}

const postgres = await resolveService('postgres', { log: null });
const realServer = postgres.provider !== 'embedded'; // PGlite serves one database and one connection

describe('outage tests name the service the error came from', () => {
  it('kafkajs refusing a connection is Kafka, not the database (it keeps ECONNREFUSED as its code)', () => {
    const refused = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092', {
      broker: '127.0.0.1:9092',
      code: 'ECONNREFUSED',
    });
    expect((refused as { code?: string }).code).toBe('ECONNREFUSED');
    expect(namedBy(refused)).toEqual(['kafka']);
    const retried = new KafkaJSNumberOfRetriesExceeded(refused, { retryCount: 5, retryTime: 100 });
    expect(namedBy(retried), 'retries exceeded, with the refusal as its cause').toEqual(['kafka']);
  });

  it("a partition with no leader yet is a Kafka outage; a request Kafka will never take is nobody's", () => {
    // kafkajs' own codes: 3 UNKNOWN_TOPIC_OR_PARTITION is retriable (a topic just made, a partition
    // moving); 10 MESSAGE_TOO_LARGE is not (the same request fails every time: a bug to fix).
    // What kafkajs decodes from the broker's answer: a message, a type, a code and whether to retry.
    const answer = (message: string, fields: { type: string; code: number; retriable: boolean }) =>
      new KafkaJSProtocolError(Object.assign(new Error(message), fields));
    const noLeader = answer('This server does not host this topic-partition', {
      type: 'UNKNOWN_TOPIC_OR_PARTITION',
      code: 3,
      retriable: true,
    });
    expect(namedBy(noLeader)).toEqual(['kafka']);
    const tooLarge = answer('The request included a message larger than the max message size the server will accept', {
      type: 'MESSAGE_TOO_LARGE',
      code: 10,
      retriable: false,
    });
    expect(namedBy(tooLarge)).toEqual([]);
  });

  it('PostgreSQL refusing connections (nothing on the port) is the database', async () => {
    const pool = createPgPool(`postgres://postgres@127.0.0.1:${await freePort()}/postgres`);
    try {
      const error = await failureOf(pool.query('SELECT 1'));
      expect((error as { code?: string }).code).toBe('ECONNREFUSED');
      expect(namedBy(error)).toEqual(['postgres']);
      const connectError = await failureOf(pool.connect());
      expect(namedBy(connectError), 'pool.connect()').toEqual(['postgres']);
    } finally {
      await pool.end();
    }
  });

  it.runIf(realServer)(
    'a database with ALLOW_CONNECTIONS false (55000) is the database; a bad query is nobody',
    async () => {
      const name = `labs_clients_test_${randomBytes(4).toString('hex')}`;
      const url = await ensureDatabase(postgres.url, name);
      const admin = new pg.Client({ connectionString: postgres.url });
      await admin.connect();
      const pool = createPgPool(url);
      try {
        const bug = await failureOf(pool.query('SELECT no_such_column'));
        expect((bug as { code?: string }).code).toBe('42703');
        expect(namedBy(bug), 'a query the database rejects is a bug').toEqual([]);
        await pool.end();
        await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
        const refusing = createPgPool(url);
        const error = await failureOf(refusing.query('SELECT 1'));
        await refusing.end();
        expect((error as { code?: string }).code).toBe('55000');
        expect((error as Error).message).toMatch(/not currently accepting connections/);
        expect(namedBy(error)).toEqual(['postgres']);
      } finally {
        await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`).catch(() => undefined);
        await admin.end();
        await dropDatabase(postgres.url, name);
      }
    },
  );

  it('Redis refusing connections is the cache, and only the cache', async () => {
    const client = createRedisClient(`redis://127.0.0.1:${await freePort()}`);
    client.on('error', () => {});
    try {
      const error = await failureOf(client.get('x'));
      expect(namedBy(error)).toEqual(['redis']);
    } finally {
      client.disconnect();
    }
  });

  it("amqplib's words for a broker that went away are RabbitMQ; a refused declaration is a bug", () => {
    const closed = Object.assign(new Error('Channel closed'), { name: 'IllegalOperationError' });
    expect(namedBy(closed)).toEqual(['rabbitmq']);
    expect(namedBy(new Error('Connection closed: 320 (CONNECTION-FORCED) with message "shutdown"'))).toEqual([
      'rabbitmq',
    ]);
    expect(namedBy(new Error('Heartbeat timeout'))).toEqual(['rabbitmq']);
    const refused = new Error('Channel closed by server: 406 (PRECONDITION-FAILED) with message "inequivalent arg"');
    expect(namedBy(refused)).toEqual([]);
  });

  it('a bare socket error is whoever marked it; unmarked, any client that hands such errors on', () => {
    const bare = () =>
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED', syscall: 'connect' });
    expect(namedBy(fromService('rabbitmq', bare()))).toEqual(['rabbitmq']);
    expect(namedBy(fromService('postgres', bare()))).toEqual(['postgres']);
    expect(namedBy(bare()), 'kafkajs wraps its socket errors, so a bare one is not Kafka').toEqual([
      'postgres',
      'redis',
      'rabbitmq',
    ]);
    expect(namedBy(new TypeError('x is not a function'))).toEqual([]);
  });
});

describe('withinDeadline', () => {
  it('gives up at the deadline with an outage of the service it names, and answers what finishes in time', async () => {
    const never = new Promise<never>(() => {});
    const error = await failureOf(withinDeadline('kafka', never, 'publishing the event', 20));
    expect(error).toBeInstanceOf(DeadlineError);
    expect((error as Error).message).toBe('publishing the event: Kafka did not answer within 20 ms');
    expect(namedBy(error)).toEqual(['kafka']);
    expect(namedBy(new Error('wrapped', { cause: error })), 'behind a wrapping error too').toEqual(['kafka']);
    expect(namedBy(await failureOf(withinDeadline('postgres', never, 'a read', 1)))).toEqual(['postgres']);
    expect(await withinDeadline('kafka', Promise.resolve(7), 'a quick call', 1000)).toBe(7);
    const bug = await failureOf(withinDeadline('kafka', Promise.reject(new TypeError('x')), 'a call', 1000));
    expect(namedBy(bug), "the call's own failure stays what it was").toEqual([]);
  });
});

describe('createPgPool', () => {
  it.runIf(realServer)(
    'a checked-out client whose connection dies mid-transaction reports it, fails its next query as an outage, and the process lives',
    async () => {
      const errors: Error[] = [];
      const name = `labs_clients_test_${randomBytes(4).toString('hex')}`;
      const url = await ensureDatabase(postgres.url, name);
      const pool = createPgPool(url, {}, (error) => errors.push(error));
      const admin = new pg.Client({ connectionString: postgres.url });
      await admin.connect();
      try {
        const client = await pool.connect();
        await client.query('BEGIN');
        const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        // The server ends the connection while the transaction is open and no query is running: an
        // 'error' event on a client nobody but the pool's 'connect' listener listens to.
        await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
        for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
        expect(errors.length, 'connection errors reported').toBeGreaterThanOrEqual(1);
        const next = await failureOf(client.query('COMMIT'));
        expect(namedBy(next), `the next query's error: ${(next as Error).message}`).toEqual(['postgres']);
        client.release(next as Error);
        expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one, 'the pool goes on').toBe(1);
      } finally {
        await pool.end();
        await admin.end();
        await dropDatabase(postgres.url, name);
      }
    },
  );
});
