/**
 * Invariants every lab keeps, checked by the kit rather than written by each spec's author, so they
 * share none of a spec's blind spots:
 *
 * - *Nothing lives for ever*: every Redis key under a test's prefix has an expiry, unless the lab's
 *   manifest names its pattern as permanent, with a reason. A key without one is a leak that grows
 *   with every client, session or lease the service has ever seen (and a lease without one is a lock
 *   that a crashed holder keeps for ever).
 * - *No credential at rest*: nothing the API handed a client as a credential (a token, a secret, a
 *   session id) appears verbatim in Redis or PostgreSQL. A dump, a backup or a `MONITOR` must not be a
 *   list of live sessions.
 * - *No process dies*: no process of the lab (the API and workers in the test process, the worker
 *   processes it forks) leaves a rejection unhandled, throws an uncaught exception or exits with an
 *   error during a test (processes.ts says what is watched and how).
 * - *A malformed message is sent*: a spec file of a lab that uses RabbitMQ or Kafka sends its
 *   consumers garbage at least once (malformed.ts), so that the two rules above meet it.
 *
 * A spec gets all three by opening its lab with {@link useLab} (after each test), the first two by
 * opening its Redis with `useRedis` (on dispose); it records what it was handed with {@link recordCredential}.
 */
import type { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, afterEach, type RunnerTestSuite } from 'vitest';
import { type LabDefinition, type LabContext, type OpenLab, openLab } from '@labs/lab-kit';
import type { ServiceKind } from '@labs/services';
import { type InvariantName, type InvariantPolicy, readLabPackage } from './lab-manifest.ts';
import { malformedMessagesSent } from './malformed.ts';
import { describeIncidents, takeProcessIncidents, watchProcesses } from './processes.ts';

/** The invariants' names come from the manifest's schema (one list), re-exported for specs. */
export { INVARIANT_NAMES, type InvariantName } from './lab-manifest.ts';

/** Thrown when an invariant does not hold; its message says what was found and where. */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

/** `*` matches any run of characters, `?` one; everything else is literal. */
function globToRegExp(glob: string): RegExp {
  const escaped = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

/** A SCAN pattern that matches `prefix` literally, then anything. */
const scanPattern = (prefix: string) => `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;

/** Every key under `prefix` (SCAN, so a big keyspace never blocks Redis). */
async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const batch of redis.scanStream({ match: scanPattern(prefix), count: 500 }) as AsyncIterable<string[]>)
    keys.push(...batch);
  return keys;
}

/**
 * The keys under `prefix` that have no expiry (PTTL -1), shown without the prefix. `permanent` holds
 * patterns, relative to the prefix, of keys that may stay (`room:*:owner`); a key gone between the scan
 * and the PTTL (-2) expired, which is fine.
 */
export async function keysWithoutExpiry(redis: Redis, prefix: string, permanent: string[] = []): Promise<string[]> {
  const allowed = permanent.map(globToRegExp);
  const found: string[] = [];
  for (const key of await keysUnder(redis, prefix)) {
    const name = key.slice(prefix.length);
    if (allowed.some((pattern) => pattern.test(name))) continue;
    if ((await redis.pttl(key)) === -1) found.push(name);
  }
  return found.sort();
}

/** Throws an {@link InvariantError} naming every key under `prefix` without an expiry. */
export async function expectEveryKeyExpires(redis: Redis, prefix: string, permanent: string[] = []): Promise<void> {
  const forever = await keysWithoutExpiry(redis, prefix, permanent);
  if (forever.length === 0) return;
  const shown = forever.slice(0, 10).join(', ') + (forever.length > 10 ? `, and ${forever.length - 10} more` : '');
  throw new InvariantError(
    `Nothing lives for ever: ${forever.length} Redis key(s) have no expiry (${shown}). Give each one a TTL ` +
      '(SET ... PX, PEXPIRE in the same script), or declare its pattern permanent, with a reason, in the ' +
      'manifest: package.json "lab.invariants.permanentKeys".',
  );
}

/** A credential the API handed out, and what it was (for the message). */
export interface Credential {
  value: string;
  what: string;
}

/** Where a credential was found at rest. */
export interface Finding {
  what: string;
  /** `redis <key>` or `postgres <schema.table>`. */
  where: string;
}

/** Shorter than this is not a credential anybody would hand out; it would only match by accident. */
const MIN_CREDENTIAL_LENGTH = 16;

/** What this test file was handed; kept for the whole file (a later test must not store an earlier one). */
const handedOut = new Map<string, Credential>();

/**
 * Records a credential the API gave the client (a token, a secret, a session id), so the kit can check
 * that it is not kept verbatim in Redis or PostgreSQL. Values shorter than 16 characters are ignored.
 */
export function recordCredential(value: string | undefined | null, what: string): void {
  if (typeof value !== 'string' || value.length < MIN_CREDENTIAL_LENGTH || handedOut.has(value)) return;
  handedOut.set(value, { value, what });
}

/** The credentials recorded so far in this test file. */
export function recordedCredentials(): Credential[] {
  return [...handedOut.values()];
}

/** Every string Redis holds for `key`: its name, and its value(s) whatever its type. */
async function stringsOf(redis: Redis, key: string): Promise<string[]> {
  const type = await redis.type(key);
  const strings = [key];
  if (type === 'string') strings.push((await redis.get(key)) ?? '');
  else if (type === 'hash') strings.push(...Object.entries(await redis.hgetall(key)).flat());
  else if (type === 'set') strings.push(...(await redis.smembers(key)));
  else if (type === 'zset') strings.push(...(await redis.zrange(key, '0', '-1')));
  else if (type === 'list') strings.push(...(await redis.lrange(key, 0, -1)));
  else if (type === 'stream') for (const [id, fields] of await redis.xrange(key, '-', '+')) strings.push(id, ...fields);
  return strings;
}

/** The recorded credentials that appear verbatim in a key name or value under `prefix`. */
export async function credentialsInRedis(
  redis: Redis,
  prefix: string,
  credentials: Credential[] = recordedCredentials(),
): Promise<Finding[]> {
  if (credentials.length === 0) return [];
  const findings: Finding[] = [];
  for (const key of await keysUnder(redis, prefix)) {
    const strings = await stringsOf(redis, key);
    for (const c of credentials)
      if (strings.some((s) => s.includes(c.value))) findings.push({ what: c.what, where: `redis ${key}` });
  }
  return findings;
}

/** The recorded credentials that appear verbatim in any row of any table of the database at `url`. */
export async function credentialsInPostgres(
  url: string,
  credentials: Credential[] = recordedCredentials(),
): Promise<Finding[]> {
  if (credentials.length === 0) return [];
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ name: string }>(
      `SELECT format('%I.%I', table_schema, table_name) AS name FROM information_schema.tables
       WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`,
    );
    const findings: Finding[] = [];
    for (const { name } of tables) {
      // A row's text form holds every column; the credentials are sent as one array parameter.
      const { rows } = await client.query<{ value: string }>(
        `SELECT c AS value FROM unnest($1::text[]) AS c WHERE EXISTS (SELECT 1 FROM ${name} AS r WHERE strpos(r::text, c) > 0)`,
        [credentials.map((c) => c.value)],
      );
      for (const { value } of rows)
        findings.push({ what: credentials.find((c) => c.value === value)!.what, where: `postgres ${name}` });
    }
    return findings;
  } finally {
    await client.end();
  }
}

/** Throws an {@link InvariantError} listing where credentials were found at rest. */
export function expectNoCredentialAtRest(findings: Finding[]): void {
  if (findings.length === 0) return;
  const shown = findings
    .slice(0, 5)
    .map((f) => `${f.what} in ${f.where}`)
    .join('; ');
  throw new InvariantError(
    `No credential at rest: ${findings.length} credential(s) the API handed out are stored verbatim (${shown}). ` +
      'Store what can check a credential (a keyed hash, an HMAC of it), never the credential itself.',
  );
}

/**
 * Throws an {@link InvariantError} when a watched process broke *no process dies* since the last check
 * (processes.ts: `watchProcesses`, which `useLab` starts): an unhandled rejection or uncaught exception
 * here, or a Node child that crashed or printed one.
 *
 * @example
 * watchProcesses(); // useLab does this, and calls expectNoProcessDied() after each test
 * const worker = fork(new URL('./worker.ts', import.meta.url));
 * worker.send({ type: 'job', body: '{not json' });
 * await settled(); // whatever tells the test the worker had its chance to fail
 * expectNoProcessDied();
 */
export function expectNoProcessDied(): void {
  const found = takeProcessIncidents();
  if (found.length > 0) throw new InvariantError(describeIncidents(found));
}

/**
 * Throws an {@link InvariantError} when a spec file of a lab whose `services` include RabbitMQ or
 * Kafka has sent no malformed message (`publishMalformed`, `produceMalformed`): its consumers never
 * met one, so nothing showed that they survive it. `useLab` calls it after the file's last test.
 */
export function expectMalformedMessageSent(services: readonly ServiceKind[]): void {
  const brokers = services.filter((s) => s === 'rabbitmq' || s === 'kafka');
  if (brokers.length === 0 || malformedMessagesSent() > 0) return;
  throw new InvariantError(
    `A malformed message is sent: this lab uses ${brokers.join(' and ')}, but this spec file sent its consumers ` +
      'no malformed message. Send some with publishMalformed (RabbitMQ) or produceMalformed (Kafka) from ' +
      '@labs/test-kit and check that the consumer lives on and sets them aside, or opt out in the manifest ' +
      '(package.json "lab.invariants.optOut": { "malformed-message-sent": "<why this file consumes nothing>" }).',
  );
}

/** True when every test of the suite ran: none was left out by a name filter or a skip. */
function ranWhole(suite: Readonly<RunnerTestSuite>): boolean {
  return suite.tasks.every((task) => (task.type === 'suite' ? ranWhole(task) : task.mode === 'run'));
}

/** Which invariants run, and what they allow: the lab's manifest, unless a caller passes its own. */
export interface InvariantOptions {
  /** The services and policy to apply (default: the manifest of the lab in the current directory). */
  manifest?: { services: ServiceKind[]; invariants: InvariantPolicy };
}

/** A lab opened for one test file, whose invariants the kit checks after each test. */
export interface LabUnderTest<Config> extends OpenLab<Config> {
  /** Checks the invariants now (the kit also does after each test): throws an {@link InvariantError}. */
  checkInvariants(): Promise<void>;
}

/**
 * Opens `definition` for this test file (as `openLab`), closes it after the file, and after each test
 * checks the invariants the lab's manifest does not opt out of: every Redis key under the lab's prefix
 * expires (bar the manifest's permanent patterns; for a lab whose manifest lists `redis`), no credential
 * recorded with {@link recordCredential} is kept verbatim under that prefix or in the lab's database,
 * and no process died (every lab: {@link expectNoProcessDied}; once more after the last test, before the
 * lab closes). After the last test, for a lab that uses RabbitMQ or Kafka, it also checks that the file
 * sent a malformed message ({@link expectMalformedMessageSent}). Call it at the top of a spec file,
 * where vitest collects hooks.
 *
 * @example
 * import lab from '../server/lab.ts';
 * const opened = await useLab(lab);
 * const { url } = await opened.context.listen(await lab.build(opened.context, {}));
 * // every test below is followed by the three checks; a broken one fails that test
 * it('...', async () => { await fetch(url); });
 */
export async function useLab<Config, Options>(
  definition: LabDefinition<Config, Options>,
  options: InvariantOptions = {},
): Promise<LabUnderTest<Config>> {
  const { services, invariants } = options.manifest ?? readLabPackage(process.cwd()).lab;
  const opened = await openLab(definition, { purpose: 'test' });
  // The database the lab's context creates, once something asks for it: that is the one to scan.
  let databaseUrl: string | undefined;
  const context: LabContext<Config> = {
    ...opened.context,
    async database(poolOptions) {
      const pool = await opened.context.database(poolOptions);
      databaseUrl ??= pool.options.connectionString;
      return pool;
    },
  };
  let checker: Promise<Redis> | undefined;
  const redis = () => (checker ??= context.redis());
  const runs = (name: InvariantName) => invariants.optOut[name] === undefined;
  if (runs('no-process-dies')) {
    watchProcesses();
    takeProcessIncidents(); // whatever happened before this file opened its lab is not its doing
  }

  async function checkInvariants(): Promise<void> {
    if (runs('no-process-dies')) expectNoProcessDied();
    const usesRedis = services.includes('redis');
    if (usesRedis && runs('nothing-lives-for-ever'))
      await expectEveryKeyExpires(await redis(), context.prefix, Object.keys(invariants.permanentKeys));
    if (runs('no-credential-at-rest') && handedOut.size > 0) {
      const findings = usesRedis ? await credentialsInRedis(await redis(), context.prefix) : [];
      if (databaseUrl) findings.push(...(await credentialsInPostgres(databaseUrl)));
      expectNoCredentialAtRest(findings);
    }
  }

  afterEach(checkInvariants);
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads a hook's first parameter as a fixture pattern; the suite is the second
  afterAll(async ({}, suite) => {
    try {
      // What died after the last test's check (a worker's exit arrives a moment later), before close ends them.
      if (runs('no-process-dies')) expectNoProcessDied();
      // A run filtered by name (lab check's run of one wrong fix, a learner's -t) may leave out the test
      // that sends the malformed messages: only a file that ran whole can be said to have sent none.
      if (runs('malformed-message-sent') && ranWhole(suite)) expectMalformedMessageSent(services);
    } finally {
      await opened.close();
    }
  });
  return { ...opened, context, checkInvariants };
}
