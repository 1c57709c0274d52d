/**
 * The kit's invariants can fail: each check below is shown a violation and must report it, and shown
 * the lawful version of the same thing and must let it pass.
 */
import { fork } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { defineLab } from '@labs/lab-kit';
import { createRedisClient, resolveService, stopServices } from '@labs/services';
import {
  credentialsInPostgres,
  credentialsInRedis,
  expectEveryKeyExpires,
  expectMalformedMessageSent,
  InvariantError,
  keysWithoutExpiry,
  MALFORMED_PAYLOADS,
  publishMalformed,
  readLabPackage,
  recordCredential,
  useLab,
  usePostgres,
  useRabbitMQ,
  useRedis,
} from '../src/index.ts';

afterAll(stopServices);

/** A lab with nothing in it: the checks only need its context (prefix, database). */
const emptyLab = defineLab({ slug: 'kit-invariants', build: () => ({ app: (_req, res) => res.end() }) });
const lab = await useLab(emptyLab, {
  manifest: {
    services: ['redis', 'postgres'],
    invariants: { permanentKeys: { 'config:*': 'set once by an operator' }, optOut: {} },
  },
});

/** The same lab, for a manifest that opts out of both invariants (each with its reason). */
const optedOut = await useLab(emptyLab, {
  manifest: {
    services: ['redis'],
    invariants: {
      permanentKeys: {},
      optOut: {
        'nothing-lives-for-ever': 'this lab is a queue whose items are removed when consumed',
        'no-credential-at-rest': 'this lab teaches why a plain-text session store is wrong',
      },
    },
  },
});

/** A credential as an API would hand one out. */
const token = () => randomBytes(32).toString('base64url');

describe('nothing lives for ever', () => {
  it('names the keys without an expiry, and only those, minus the permanent patterns', async () => {
    await using redis = await useRedis({ permanentKeys: { 'config:*': 'set once by an operator' } });
    const { client, prefix } = redis;
    await client.set(`${prefix}lease:7`, 'holder'); // a lock a crashed holder would keep for ever
    await client.hset(`${prefix}session:1`, 'user', 'ada');
    await client.set(`${prefix}entry:7`, 'cached', 'PX', 60_000);
    await client.set(`${prefix}config:limits`, '{}');
    expect(await keysWithoutExpiry(client, prefix, ['config:*'])).toEqual(['lease:7', 'session:1']);
    await expect(expectEveryKeyExpires(client, prefix, ['config:*'])).rejects.toThrow(
      /^Nothing lives for ever: 2 Redis key\(s\) have no expiry \(lease:7, session:1\)/,
    );
    await client.pexpire(`${prefix}lease:7`, 3000);
    await client.pexpire(`${prefix}session:1`, 3000);
    await expect(expectEveryKeyExpires(client, prefix, ['config:*'])).resolves.toBeUndefined();
  });

  it('useRedis throws on dispose when a key under its prefix has no expiry, and still deletes every key', async () => {
    let prefix = '';
    const leaky = async () => {
      await using redis = await useRedis();
      prefix = redis.prefix;
      await redis.client.set(`${prefix}counter`, '1');
      await redis.client.set(`${prefix}fine`, '1', 'PX', 60_000);
    };
    await expect(leaky()).rejects.toBeInstanceOf(InvariantError);
    const { url } = await resolveService('redis', { log: null });
    const check = createRedisClient(url);
    expect(await check.keys(`${prefix}*`)).toEqual([]);
    await check.quit();
  });

  it("useLab's check covers the lab's prefix, and lets a manifest's permanent pattern stay", async () => {
    const redis = await lab.context.redis();
    await redis.set(`${lab.context.prefix}config:limits`, '{}');
    await expect(lab.checkInvariants()).resolves.toBeUndefined();
    await redis.set(`${lab.context.prefix}limiter:alice`, '3');
    await expect(lab.checkInvariants()).rejects.toThrow(/no expiry \(limiter:alice\)/);
    await redis.del(`${lab.context.prefix}limiter:alice`); // the check after this test must pass
  });
});

describe('opting out', () => {
  it("a manifest's opt-out, with its reason, turns an invariant off for that lab only", async () => {
    const redis = await optedOut.context.redis();
    const secret = token();
    recordCredential(secret, 'a session id');
    await redis.set(`${optedOut.context.prefix}session:${secret}`, 'ada'); // no expiry, and a credential
    await expect(optedOut.checkInvariants()).resolves.toBeUndefined();
    await redis.set(`${lab.context.prefix}session:${secret}`, 'ada');
    await expect(lab.checkInvariants()).rejects.toThrow(/^Nothing lives for ever/);
    await redis.pexpire(`${lab.context.prefix}session:${secret}`, 60_000);
    await expect(lab.checkInvariants()).rejects.toThrow(/^No credential at rest/);
    await redis.del(`${lab.context.prefix}session:${secret}`, `${optedOut.context.prefix}session:${secret}`);
  });
});

describe('no credential at rest', () => {
  it('finds a recorded credential in a key name or in any kind of value, but not its keyed hash', async () => {
    await using redis = await useRedis();
    const { client, prefix } = redis;
    const [session, refresh, apiKey, hashed] = [token(), token(), token(), token()];
    const credentials = [
      { value: session, what: 'session id' },
      { value: refresh, what: 'refresh token' },
      { value: apiKey, what: 'API key' },
      { value: hashed, what: 'hashed token' },
    ];
    await client.set(`${prefix}session:${session}`, 'ada', 'PX', 60_000);
    await client.hset(`${prefix}family:1`, 'current', `1.${refresh}`);
    await client.rpush(`${prefix}keys`, 'other', apiKey);
    const keyed = createHmac('sha256', 'server secret').update(hashed).digest('base64url');
    await client.set(`${prefix}token:${keyed}`, 'ada', 'PX', 60_000);
    const findings = await credentialsInRedis(client, prefix, credentials);
    expect(findings.map((f) => `${f.what} in ${f.where.slice(0, 6)}`).sort()).toEqual([
      'API key in redis ',
      'refresh token in redis ',
      'session id in redis ',
    ]);
    await client.del(`${prefix}family:1`, `${prefix}keys`);
  });

  it('finds a recorded credential in any column of any table of a database', async () => {
    await using db = await usePostgres();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const [plain, hashed] = [token(), token()];
      await client.query('CREATE SCHEMA auth');
      await client.query('CREATE TABLE auth.sessions (id int, user_name text, secret text)');
      await client.query('INSERT INTO auth.sessions VALUES (1, $1, $2)', ['ada', `v1:${plain}`]);
      await client.query('INSERT INTO auth.sessions VALUES (2, $1, $2)', [
        'bob',
        createHmac('sha256', 'server secret').update(hashed).digest('hex'),
      ]);
      const found = await credentialsInPostgres(db.url, [
        { value: plain, what: 'session secret' },
        { value: hashed, what: 'hashed secret' },
      ]);
      expect(found).toEqual([{ what: 'session secret', where: 'postgres auth.sessions' }]);
    } finally {
      await client.end();
    }
  });

  it('useRedis and usePostgres check it on dispose, and still remove what they made', async () => {
    const secret = token();
    recordCredential(secret, 'a session id');
    let prefix = '';
    const inRedis = async () => {
      await using redis = await useRedis();
      prefix = redis.prefix;
      await redis.client.set(`${prefix}session:${secret}`, 'ada', 'PX', 60_000);
    };
    await expect(inRedis()).rejects.toThrow(/^No credential at rest: .*a session id in redis .*:session:/);
    const { url } = await resolveService('redis', { log: null });
    const check = createRedisClient(url);
    expect(await check.keys(`${prefix}*`)).toEqual([]);
    await check.quit();

    let database = '';
    const inPostgres = async () => {
      await using db = await usePostgres();
      database = db.url;
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      await client.query('CREATE TABLE sessions (id text)');
      await client.query('INSERT INTO sessions VALUES ($1)', [secret]);
      await client.end();
    };
    await expect(inPostgres()).rejects.toThrow(/a session id in postgres public\.sessions/);
    const gone = new pg.Client({ connectionString: database });
    await expect(gone.connect()).rejects.toThrow(/does not exist/);
  });

  it("useLab's check scans the lab's prefix and database for what the spec recorded", async () => {
    const secret = token();
    recordCredential(secret, 'a refresh token');
    recordCredential('short', 'too short to be a credential'); // ignored: it would match by accident
    await expect(lab.checkInvariants()).resolves.toBeUndefined();
    const pool = await lab.context.database();
    await pool.query('CREATE TABLE refresh_tokens (token text)');
    await pool.query('INSERT INTO refresh_tokens VALUES ($1)', [secret]);
    await expect(lab.checkInvariants()).rejects.toThrow(
      /^No credential at rest: 1 credential\(s\) .* \(a refresh token in postgres public\.refresh_tokens\)/,
    );
    await pool.query('DELETE FROM refresh_tokens');
    const redis = await lab.context.redis();
    await redis.set(`${lab.context.prefix}token`, secret, 'PX', 60_000);
    await expect(lab.checkInvariants()).rejects.toThrow(/a refresh token in redis .*:token\)/);
    await redis.del(`${lab.context.prefix}token`);
  });
});

describe('no process dies', () => {
  it("useLab's check fails on a child of the lab that crashed, and passes once it was reported", async () => {
    const child = fork(new URL('./fixtures/crashing-child.ts', import.meta.url), ['throw'], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    await once(child, 'close');
    await new Promise((resolve) => setImmediate(resolve));
    await expect(lab.checkInvariants()).rejects.toThrow(/^No process dies: 2 incident\(s\)[\s\S]*exited with code 1/);
    await expect(lab.checkInvariants()).resolves.toBeUndefined();
  });

  it('a lab that opts out is not told', async () => {
    const quiet = await useLab(emptyLab, {
      manifest: {
        services: [],
        invariants: {
          permanentKeys: {},
          optOut: { 'no-process-dies': 'a lab about crashes, which it causes on purpose' },
        },
      },
    });
    const child = fork(new URL('./fixtures/crashing-child.ts', import.meta.url), ['exit-1'], { stdio: 'ignore' });
    await once(child, 'close');
    await new Promise((resolve) => setImmediate(resolve));
    await expect(quiet.checkInvariants()).resolves.toBeUndefined();
    await expect(lab.checkInvariants()).rejects.toThrow(/^No process dies: 1 incident/);
  });
});

describe('a malformed message is sent', () => {
  it('is required of a file whose lab uses RabbitMQ or Kafka, and met once one was published', async () => {
    expect(() => expectMalformedMessageSent(['redis', 'postgres'])).not.toThrow();
    expect(() => expectMalformedMessageSent(['postgres', 'rabbitmq'])).toThrow(
      /^A malformed message is sent: this lab uses rabbitmq, but this spec file sent its consumers no malformed message/,
    );
    await using rabbit = await useRabbitMQ();
    const queue = rabbit.name('jobs');
    const connection = await amqp.connect(rabbit.url);
    await (await connection.createChannel()).assertQueue(queue, { durable: false });
    await connection.close();
    await publishMalformed(rabbit.url, { queue }, { payloads: [MALFORMED_PAYLOADS[0]!] });
    expect(() => expectMalformedMessageSent(['rabbitmq', 'kafka'])).not.toThrow();
  });
});

describe('the manifest', () => {
  it('takes permanent key patterns and opt-outs only with a reason', () => {
    const write = (invariants: unknown) => {
      const dir = mkdtempSync(join(tmpdir(), 'lab-manifest-'));
      const lab = { order: 1, title: 'T', topic: 't', difficulty: 'easy', exercise: ['src/a.ts'], invariants };
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: '@labs/t', lab }));
      return dir;
    };
    expect(readLabPackage(write(undefined)).lab.invariants).toEqual({ permanentKeys: {}, optOut: {} });
    const reasoned = { permanentKeys: { 'room:*:owner': 'an owner is kept until the room is deleted' }, optOut: {} };
    expect(readLabPackage(write(reasoned)).lab.invariants).toEqual(reasoned);
    expect(() => readLabPackage(write({ permanentKeys: { 'room:*': 'yes' } }))).toThrow(/needs a reason/);
    expect(() => readLabPackage(write({ optOut: { 'nothing-lives-for-ever': '' } }))).toThrow(/needs a reason/);
    const noWatch = {
      permanentKeys: {},
      optOut: { 'no-process-dies': 'this lab teaches what a crash loses, on purpose' },
    };
    expect(readLabPackage(write(noWatch)).lab.invariants).toEqual(noWatch);
    expect(() => readLabPackage(write({ optOut: { 'no-thing-breaks': 'an invariant nobody wrote' } }))).toThrow();
  });
});
