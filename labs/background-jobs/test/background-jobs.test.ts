/**
 * The background-jobs spec. Baseline tests hold for any version; each `challenge:` fails on the
 * starter and passes on a worker that survives crashes. Everything is counted (jobs confirmed, jobs
 * lost, duplicates, attempts, jobs in progress at once), nothing is timed, except that retries must
 * wait at least their delay. Crashes are real: a worker in a child process killed with SIGKILL, and
 * connections cut by a TCP proxy in front of the real RabbitMQ.
 */
import { AsyncLocalStorage, createHook } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp from 'amqplib';
import type pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createPublisher, startWorker } from '#job-queue';
import { listen, publishMalformed, stallingProxy, useLab, useRabbitMQ } from '@labs/test-kit';
import { openLab } from '@labs/lab-kit';
import { createPgPool } from '@labs/services';
import { RETRY_AFTER_SEC } from '../server/app.ts';
import backgroundJobsLab, { type BackgroundJobsLabOptions, DATABASE_POOL_OPTIONS } from '../server/lab.ts';
import { openBrokerAdmin } from '../server/broker.ts';
import { confirmationsPerJob, createConfirmationSender, migrate } from '../server/confirmations.ts';
import {
  type ConfirmationJob,
  DEAD_LETTER_HEADERS,
  decodeJob,
  encodeJob,
  JOB_ROUTING_KEY,
  type JobQueueNames,
  jobQueueNames,
  type QueueSettings,
} from '../server/jobs.ts';
import { forkWorker } from '../server/worker-child.ts';
import { amqpProxy } from './amqp-proxy.ts';
import { makeJob, makeJobs, range, takeAll, waitFor, waitUntilSteady } from './helpers.ts';

// One lab context (its own database, dropped at the end; the kit's invariants checked after each test)
// and one set of queue names for this file.
const lab = await useLab(backgroundJobsLab);
const db = await lab.context.database();
await migrate(db);
const databaseUrl = db.options.connectionString as string;
const rabbit = await useRabbitMQ();
const admin = await openBrokerAdmin(rabbit.url);
afterAll(async () => {
  await admin.close();
  await rabbit[Symbol.asyncDispose]();
});

/** Small delays, so a poison job is given up in well under a second. */
const RETRY_DELAYS = [50, 100, 200];
const ATTEMPTS = 1 + RETRY_DELAYS.length;
/**
 * While a failed job's retry copy is refused, at most this many tries in this window: a pause of a
 * quarter of a second or more between tries passes, a job given back at once (tens of tries a second
 * even on a busy machine) does not.
 */
const REFUSED_WINDOW_MS = 2000;
const REFUSED_MAX_TRIES = 8;

// What each test started, stopped in reverse order after it (workers before their queues go).
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  // Bounded: amqplib's close() never settles when the socket dies during the close handshake.
  for (const cleanup of cleanups.splice(0).reverse()) {
    await Promise.race([cleanup().catch(() => undefined), sleep(5000)]);
  }
});

let testNo = 0;
/** Queue names of this test's own, deleted after it (and by the fixture at the end, to be sure). */
function freshQueues(): JobQueueNames {
  const n = ++testNo;
  const names = jobQueueNames((part) => rabbit.name(`${n}.${part}`), RETRY_DELAYS);
  cleanups.push(() => admin.deleteJobQueue(names));
  return names;
}

/**
 * A queue of the test's own, bound to the work exchange as the work queue is: it keeps a copy of every
 * message routed to the work queue (published, back from a delay queue, or sent round again), so its
 * depth counts them. Nothing consumes it; deleted after the test.
 */
async function routedCount(names: JobQueueNames): Promise<() => Promise<number>> {
  const copies = rabbit.name(`${testNo}.routed`);
  cleanups.push(() => admin.deleteAll([copies]));
  const connection = await amqp.connect(rabbit.url);
  try {
    const channel = await connection.createChannel();
    await channel.assertQueue(copies, { durable: false });
    await channel.bindQueue(copies, names.exchange, JOB_ROUTING_KEY);
  } finally {
    await connection.close();
  }
  return () => readyIn(copies);
}

/** The learner's code logs what goes wrong; a test collects it instead of printing it. */
const logged: string[] = [];
const log = (line: string) => void logged.push(line);

/**
 * The lines of `lines` that carry the password of `url` as a URL does (`user:password@`): a broker URL
 * logged as it was given. Logs are kept for months and read by far more people than the password is
 * meant for; say which broker by its host.
 */
function linesWithPassword(lines: readonly string[], url: string): string[] {
  const { username, password } = new URL(url);
  if (!password) throw new Error(`${url} has no password to look for`);
  return lines.filter((line) => line.includes(`${username}:${password}@`));
}

function settings(names: JobQueueNames, overrides: Partial<QueueSettings> = {}): QueueSettings {
  return {
    url: rabbit.url,
    names,
    prefetch: 10,
    retryDelaysMs: RETRY_DELAYS,
    publishTimeoutMs: 5000,
    log,
    ...overrides,
  };
}

/** Declares the exchange and the work queue again as durable: 'agreed', or why the broker refused. */
async function declaredDurable(names: JobQueueNames): Promise<string> {
  const connection = await amqp.connect(rabbit.url);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {}); // a refusal closes the channel; the declaration rejects with it too
    await channel.assertExchange(names.exchange, 'direct', { durable: true });
    await channel.assertQueue(names.queue, { durable: true });
    return 'agreed';
  } catch (error) {
    return (error as Error).message;
  } finally {
    await connection.close();
  }
}

/** Declares the queues the way the API does (the learner's publisher), so jobs can wait before any worker. */
async function declareQueues(names: JobQueueNames): Promise<void> {
  const publisher = await createPublisher(settings(names));
  await publisher.close();
}

/**
 * One of the learner's workers in this process, with a sender that counts and a pool of its own (so a
 * test can see whether the worker gives back every connection it takes); stopped after the test.
 */
async function workerHere(
  names: JobQueueNames,
  overrides: Partial<QueueSettings> & {
    workMs?: number;
    db?: pg.Pool;
    meetCopiesMs?: number;
    meetCopiesOf?: ReadonlySet<string>;
    failAfterFirstEffect?: boolean;
    hangAfter?: number;
    holdJobs?: ReadonlySet<string>;
  } = {},
) {
  const {
    workMs = 2,
    db: given,
    meetCopiesMs,
    meetCopiesOf,
    failAfterFirstEffect,
    hangAfter,
    holdJobs,
    ...rest
  } = overrides;
  const pool = given ?? createPgPool(databaseUrl, { ...DATABASE_POOL_OPTIONS, max: 10 });
  if (!given) {
    cleanups.push(async () => {
      // A client the stopped worker never gave back keeps end() waiting for ever: then the pool ends
      // when it can (never, for a leaked client), and the next test does not wait for it.
      const leaked = pool.totalCount - pool.idleCount;
      const ended = pool.end();
      if (leaked === 0) await ended;
      else ended.catch(() => undefined);
    });
  }
  const sender = createConfirmationSender({
    workMs,
    meetCopiesMs,
    meetCopiesOf,
    failAfterFirstEffect,
    hangAfter,
    holdJobs,
  });
  const worker = await startWorker(settings(names, rest), { db: pool, sendConfirmation: sender.send });
  cleanups.push(() => worker.stop());
  cleanups.push(async () => sender.releaseHeld()); // cleanups run in reverse: held calls go on, then the worker stops
  return Object.assign(sender, { worker, pool });
}

/**
 * Stops a worker started by workerHere, then checks that it gave back every database connection it
 * took: a client not released on some path (an error, an early return) is a pool that runs dry after
 * as many jobs, and one left inside its transaction also holds its row locks until the process dies.
 */
async function stopAndCountHeldClients(worker: Awaited<ReturnType<typeof workerHere>>): Promise<number> {
  await worker.worker.stop();
  const { pool } = worker;
  return await waitFor(
    () => pool.totalCount - pool.idleCount,
    (held) => held === 0,
    { timeoutMs: 5000 },
  );
}

/** One of the learner's workers in a child process (the one a test kills); killed after the test. */
async function workerProcess(
  names: JobQueueNames,
  options: { url?: string; databaseUrl?: string; hangAfter?: number; hangAfterEffectToo?: boolean; prefetch?: number },
) {
  const { url = rabbit.url, hangAfter, hangAfterEffectToo, prefetch = 10 } = options;
  const child = await forkWorker({
    settings: { url, names, prefetch, retryDelaysMs: RETRY_DELAYS, publishTimeoutMs: 5000 },
    databaseUrl: options.databaseUrl ?? databaseUrl,
    workMs: 1,
    hangAfter,
    hangAfterEffectToo,
  });
  cleanups.push(() => child.kill());
  return child;
}

/** A proxy in front of the broker, closed after the test (after the workers that use it stopped). */
async function brokerProxy() {
  const proxy = await amqpProxy(rabbit.url);
  cleanups.push(async () => {
    await proxy[Symbol.asyncDispose]();
  });
  return proxy;
}

/** An instance of the API (the lab as `lab serve` builds it, without its worker), on the spec's lab context or `on`. */
async function api(
  names: JobQueueNames,
  options: Partial<BackgroundJobsLabOptions> = {},
  on: Pick<typeof lab, 'context'> = lab,
): Promise<string> {
  const { app } = await backgroundJobsLab.build(on.context, {
    names,
    db,
    worker: false,
    retryDelaysMs: RETRY_DELAYS,
    log,
    ...options,
  });
  const server = await listen(app);
  cleanups.push(async () => {
    await server[Symbol.asyncDispose]();
  });
  return server.url;
}

const ORDER = { email: 'ada@example.com', items: [{ sku: 'mug', quantity: 2 }] };

/** POSTs an order; its status and, for a 202, the job id. */
async function postOrder(url: string, body: unknown = ORDER) {
  const res = await fetch(`${url}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const json = (await res.json()) as { jobId?: string; status?: unknown; title?: string };
  return { status: res.status, location: res.headers.get('location'), type: res.headers.get('content-type'), json };
}

/** Confirmations per job, as a plain object (so waitFor can see it change). */
async function confirmations(jobs: readonly (ConfirmationJob | string)[]): Promise<Record<string, number>> {
  const ids = jobs.map((job) => (typeof job === 'string' ? job : job.jobId));
  return Object.fromEntries(await confirmationsPerJob(db, ids));
}
/**
 * Publishes `job` as a producer that sets headers of its own (a trace id, say), confirmed: what the
 * worker passes on must keep them, so a retried or parked job can still be traced to its request.
 */
async function publishWithHeaders(names: JobQueueNames, job: ConfirmationJob, headers: Record<string, string>) {
  const connection = await amqp.connect(rabbit.url);
  try {
    const channel = await connection.createConfirmChannel();
    channel.publish(names.exchange, JOB_ROUTING_KEY, encodeJob(job), {
      persistent: true,
      mandatory: true,
      messageId: job.jobId,
      contentType: 'application/json',
      headers,
    });
    await channel.waitForConfirms();
  } finally {
    await connection.close();
  }
}

const values = (counts: Record<string, number>) => Object.values(counts);
const allDone = (counts: Record<string, number>) => values(counts).every((n) => n >= 1);
const notDone = (counts: Record<string, number>) => values(counts).filter((n) => n === 0).length;
const duplicates = (counts: Record<string, number>) => values(counts).reduce((sum, n) => sum + Math.max(0, n - 1), 0);
const consumersOf = async (queue: string) => (await admin.queueState(queue))?.consumers ?? 0;
/** Polls the consumers of `queue` until `wanted` holds of their number (or the time is up); resolves with the last. */
const consumersReach = (queue: string, wanted: (consumers: number) => boolean, timeoutMs = 5000) =>
  waitFor(() => consumersOf(queue), wanted, { timeoutMs });
const readyIn = async (queue: string) => (await admin.queueState(queue))?.messages ?? 0;
/** Messages waiting in `queues` together (a queue that does not exist holds none). */
const waitingIn = async (queues: readonly string[]) => {
  let waiting = 0;
  for (const queue of queues) waiting += await readyIn(queue);
  return waiting;
};

/**
 * Waits (up to 15 s) for the job's dead letter, then counts what happens next: parked means done, so
 * the worker tries it no more. One that still takes the broker's confirm of a copy for a refusal (a
 * refusal remembered too long) gives the job back and tries it again within milliseconds, parking
 * another copy each time. Counted over 3 s from the moment the dead letter is seen: a right version's
 * count stays where it is, so its wait is the whole 3 s, a bound on a negative, not a speed.
 */
async function parkedThenLeftAlone(
  sender: { attemptsOf(jobId: string): number[] },
  jobId: string,
  names: JobQueueNames,
): Promise<{ parked: number; triesAfter: number }> {
  const parked = await waitFor(
    () => readyIn(names.deadQueue),
    (n) => n >= 1,
    { timeoutMs: 15_000 },
  );
  if (parked === 0) return { parked, triesAfter: 0 };
  const parkedAt = sender.attemptsOf(jobId).length;
  return await waitFor(
    async () => ({ parked: await readyIn(names.deadQueue), triesAfter: sender.attemptsOf(jobId).length - parkedAt }),
    (s) => s.triesAfter > 0 || s.parked > 1,
    { timeoutMs: 3000 },
  );
}

/**
 * Watches amqplib in this process until the test ends: the bytes of message content handed to a
 * channel's publish() for `exchange` (a confirm channel's publish goes through the same method), with
 * the message id of each, and the bytes written to the sockets opened from now on to `port` (amqplib
 * writes its frames there). What was handed and not yet written waits in amqplib's buffers, in the
 * process's memory. A message handed to publish() is on its way: nothing takes it back.
 */
async function watchAmqplib(exchange: string, port: number) {
  // amqplib exports no channel class: its prototype is taken from a channel of our own.
  const probe = await amqp.connect(rabbit.url);
  const channels = Object.getPrototypeOf(await probe.createChannel()) as {
    publish(exchange: string, routingKey: string, content: Buffer, ...rest: unknown[]): boolean;
  };
  await probe.close();
  const publish = channels.publish;
  let handed = 0;
  const handedIds = new Set<string>();
  channels.publish = function (this: unknown, to, routingKey, content, ...rest) {
    if (to === exchange) {
      handed += content.length;
      handedIds.add(String((rest[0] as { messageId?: unknown } | undefined)?.messageId));
    }
    return publish.call(this, to, routingKey, content, ...rest);
  };
  // Node announces each client socket it creates on this diagnostics channel.
  const sockets: Socket[] = [];
  const opened = (message: unknown) => void sockets.push((message as { socket: Socket }).socket);
  subscribe('net.client.socket', opened);
  cleanups.push(async () => {
    channels.publish = publish;
    unsubscribe('net.client.socket', opened);
  });
  return {
    get handed() {
      return handed;
    },
    /** The message ids of the messages handed to publish() for `exchange`. */
    handedIds: handedIds as ReadonlySet<string>,
    get written() {
      return sockets
        .filter((socket) => socket.remotePort === port)
        .reduce((sum, socket) => sum + socket.bytesWritten, 0);
    },
  };
}

/**
 * Counts the timers set while `run`'s work runs, or by what it starts (a socket's callbacks, a
 * reconnect's backoff, which inherit its async context), that are still set when read: a timer that
 * fired or was cleared drops out. Another test's leftovers, outside that context, are not counted.
 */
function timersSetIn() {
  const ours = new AsyncLocalStorage<true>();
  const set = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type === 'Timeout' && ours.getStore()) set.add(id);
    },
    destroy(id) {
      set.delete(id);
    },
  });
  hook.enable();
  cleanups.push(async () => hook.disable());
  return {
    run: <T>(work: () => Promise<T>) => ours.run(true, work),
    get running() {
      return set.size;
    },
  };
}

/** The largest order the API takes: 50 lines, each with a 40-character product code. */
const LARGE_ORDER = range(50).map((i) => ({ sku: `mug-${i}-`.padEnd(40, 'x'), quantity: 99 }));

/**
 * Publishes `count` fresh jobs (confirmed, so they are in the queue) and waits for a worker to do them,
 * up to 5 s; returns how many it did not do. For a worker that has just lost its connection or its
 * channel: a right one is back at once, or after its first reconnect delay (100 ms with amqplib 2's
 * recovery and the solution's), and 5 s leave room for a busy machine.
 */
async function publishAndCountNotDone(names: JobQueueNames, count: number): Promise<number> {
  const jobs = makeJobs(count);
  await admin.publishJobs(names, jobs);
  const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 5000 });
  return notDone(counts);
}

describe('baseline: what any version must do', () => {
  it('POST /orders answers 202 with a job id, and each job is done exactly once', async () => {
    const names = freshQueues();
    const url = await api(names);
    await workerHere(names);
    const answers = await Promise.all(range(5).map(() => postOrder(url)));
    for (const answer of answers) {
      expect(answer.status).toBe(202);
      expect(answer.json.jobId).toMatch(/^[0-9a-f-]{36}$/);
      expect(answer.location).toBe(`/jobs/${answer.json.jobId}`);
    }
    const ids = answers.map((answer) => answer.json.jobId as string);
    const counts = await waitFor(() => confirmations(ids), allDone, { timeoutMs: 10_000 });
    expect(values(counts), 'confirmations per job').toEqual([1, 1, 1, 1, 1]);
    const status = (await (await fetch(`${url}/jobs/${ids[0]}`)).json()) as { status: string; confirmations: number };
    expect(status).toMatchObject({ status: 'done', confirmations: 1 });
    // Durable, so a broker restart keeps them (and the persistent jobs in the queue): declared again as
    // durable, the broker agrees; a transient one it refuses (PRECONDITION_FAILED, inequivalent arg).
    expect(await declaredDurable(names), 'the exchange and the work queue, declared again as durable').toBe('agreed');
  });

  it('refuses a malformed order with a 4xx problem, and queues nothing for it', async () => {
    const names = freshQueues();
    const url = await api(names);
    const bad = [
      {},
      { email: 'not an address', items: ORDER.items },
      { email: ORDER.email, items: [] },
      { email: ORDER.email, items: [{ sku: 'mug', quantity: 0 }] },
      { email: ORDER.email, items: [{ sku: 'MUG; DROP TABLE', quantity: 1 }] },
      '{"email": "ada@example.com", "items": [',
    ];
    for (const body of bad) {
      const answer = await postOrder(url, body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.type).toMatch(/^application\/problem\+json/);
      expect(answer.json).toMatchObject({ status: 400, title: 'Bad Request' });
    }
    const text = await fetch(`${url}/orders`, { method: 'POST', body: 'email=ada@example.com' });
    expect(text.status, 'a body that is not JSON').toBe(415);
    // One good order afterwards: the queue holds exactly that one.
    expect((await postOrder(url)).status).toBe(202);
    const ready = await waitFor(
      () => readyIn(names.queue),
      (n) => n >= 1,
      { timeoutMs: 5000 },
    );
    expect(ready, 'jobs in the queue after 7 bad orders and 1 good one').toBe(1);
    expect((await fetch(`${url}/jobs/not-a-uuid`)).status).toBe(400);
  });

  it('two workers on one queue share its jobs', async () => {
    // Competing consumers: how a fleet scales, and how a deploy replaces one worker with another. A
    // worker that consumes exclusively ("so no two workers take one job": the broker already gives each
    // delivery to one consumer) refuses every other, which then cannot start or never gets a job.
    const names = freshQueues();
    await declareQueues(names);
    const first = await workerHere(names, { workMs: 20 });
    // The second worker connects through a proxy: one that never starts leaves the spec no handle to
    // stop it, and it would go on declaring this test's queues after they are deleted; the proxy, closed
    // after the test, refuses it from then on.
    const second = await Promise.race([
      workerHere(names, { workMs: 20, url: (await brokerProxy()).url }),
      sleep(10_000).then(() => 'not started'),
    ]);
    expect(
      typeof second === 'string' ? 'not started within 10 s' : 'started',
      'a second worker on the queue the first one consumes',
    ).toBe('started');
    const consumers = await consumersReach(names.queue, (n) => n >= 2);
    expect(consumers, 'consumers on the work queue with two workers running').toBe(2);
    const jobs = makeJobs(40);
    await admin.publishJobs(names, jobs);
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 15_000 });
    expect(notDone(counts), 'jobs not done').toBe(0);
    // The broker hands deliveries to its consumers in turn: each worker gets about half.
    const shares = [first, second as typeof first].map((worker) => worker.stats.calls);
    expect(Math.min(...shares), `jobs done by each of the two workers: ${shares.join(' and ')}`).toBeGreaterThan(0);
  });
});

/** A request that must be answered by `deadlineMs`: its status ('unanswered' if not), time and 503 headers. */
async function answerBy(
  deadlineMs: number,
  method: 'GET' | 'POST',
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const started = performance.now();
  const request = `${method} ${new URL(url).pathname}`;
  try {
    const res = await fetch(url, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(deadlineMs),
    });
    const text = await res.text();
    return {
      request,
      status: res.status as number | 'unanswered',
      json: (text.startsWith('{') ? JSON.parse(text) : {}) as { jobId?: string; detail?: string },
      type: res.headers.get('content-type'),
      retryAfter: res.headers.get('retry-after'),
      ms: Math.round(performance.now() - started),
    };
  } catch (error) {
    if ((error as Error).name !== 'TimeoutError') throw error;
    return { request, status: 'unanswered' as const, json: {}, type: null, retryAfter: null, ms: deadlineMs };
  }
}

/** What an outage must look like to a client: a 503 problem that says when to come back. */
const OUTAGE_ANSWER = {
  status: 503,
  type: expect.stringMatching(/^application\/problem\+json/),
  retryAfter: String(RETRY_AFTER_SEC),
};

describe('baseline: under faults, every request is answered within a bound', () => {
  /**
   * How long the database stays away in the tests below: longer than a query timeout (2.5 s) and far
   * longer than the whole retry schedule (50 + 100 + 200 ms), so a worker that spends a job's attempts
   * on a database that refuses connections has given every job up before it is back.
   */
  const OUTAGE_MS = 3000;
  /**
   * When a read must have been answered. Down, the connection is refused at once; stalled, the pool
   * gives up after at most 2.5 s (DATABASE_POOL_OPTIONS). Both with room for a busy 2-core machine.
   */
  const READ_BOUND_MS = { down: 2000, stalled: 6000 };

  it.each(['down', 'stalled'] as const)(
    'PostgreSQL %s: reads answer 503 with Retry-After within the bound, orders are still queued, and their jobs are done once it is back',
    async (fault) => {
      // The lab's pool settings, through a proxy the test can take the database away with: down (connections
      // closed, the port refused) and back on the same address, or stalled (connected, then silent) and resumed.
      const names = freshQueues();
      let faultOn: () => Promise<void> | void;
      let faultOff: () => Promise<void> | void;
      const proxy = await stallingProxy(databaseUrl);
      cleanups.push(async () => proxy[Symbol.asyncDispose]());
      const databaseVia = proxy.url;
      if (fault === 'down') [faultOn, faultOff] = [() => proxy.kill(), () => proxy.revive()];
      else [faultOn, faultOff] = [() => proxy.stall(), () => proxy.resume()];
      const faulty = createPgPool(databaseVia, DATABASE_POOL_OPTIONS);
      cleanups.push(() => faulty.end());
      cleanups.push(async () => faultOff()); // if the test failed half-way: nothing else is left waiting
      // The API and a worker on that one pool, as `lab serve` runs them.
      const url = await api(names, { db: faulty });
      await workerHere(names, { db: faulty });
      await faulty.query('SELECT 1'); // one connection open and idle, as in a running service

      await faultOn();
      const outageStarted = performance.now();
      // Queueing needs the broker only: orders are accepted while the database is away.
      const orders = await Promise.all(range(5).map(() => postOrder(url)));
      expect(
        orders.map((order) => order.status),
        `orders sent while PostgreSQL was ${fault}`,
      ).toEqual([202, 202, 202, 202, 202]);
      const ids = orders.map((order) => order.json.jobId as string);
      // Reads need the database: a 503 a client can act on, soon, never a 500 or a request left hanging.
      const bound = READ_BOUND_MS[fault];
      const reads = await Promise.all([
        answerBy(bound, 'GET', `${url}/jobs/${ids[0]}`),
        answerBy(bound, 'GET', `${url}/stats`),
      ]);
      const wrong = reads.filter((read) => read.status !== 503 || read.ms >= bound);
      expect(
        wrong,
        `PostgreSQL ${fault}: ${wrong.length} of ${reads.length} reads not answered 503 within ${bound} ms`,
      ).toEqual([]);
      for (const read of reads) expect(read, `PostgreSQL ${fault}: ${read.request}`).toMatchObject(OUTAGE_ANSWER);

      await sleep(Math.max(0, OUTAGE_MS - (performance.now() - outageStarted)));
      await faultOff();
      // Every job was delivered during the outage and could not be done. None may have been acked without
      // its confirmation, or given up: each is done now that the database is back.
      // Until every job is done, or every job not done is in the dead-letter queue, where nothing takes it
      // from (already a failure below: a dead-lettered job is one that was given up).
      const { counts, dead } = await waitFor(
        async () => ({ counts: await confirmations(ids), dead: await readyIn(names.deadQueue) }),
        (s) => allDone(s.counts) || (s.dead > 0 && notDone(s.counts) <= s.dead),
        { timeoutMs: 15_000 },
      );
      expect(
        notDone(counts),
        `${notDone(counts)} of ${ids.length} jobs accepted while PostgreSQL was ${fault} were never done after it came back (${dead} dead-lettered): a job whose effect could not be written must go back to the queue`,
      ).toBe(0);
      expect(dead, `jobs dead-lettered because PostgreSQL was ${fault}: an outage is not the job's fault`).toBe(0);
      expect((await answerBy(bound, 'GET', `${url}/jobs/${ids[0]}`)).status, 'a read once it is back').toBe(200);
    },
    45_000,
  );

  it('PostgreSQL connections reset mid-transaction under load: no process dies, every request is answered, and no accepted job is lost', async () => {
    // The worker (a process of its own) and the API reach the database through a proxy. The worker does
    // 10 jobs, then holds the next ones inside their transactions, half of them before their effect is
    // written and half after it (the commit still to come); with those connections checked out, the
    // proxy is killed, which resets every connection, while orders and reads keep coming. A pg client
    // checked out of a pool has no 'error' listener of the pool's: an error event on it with none of
    // ours kills the process. And whatever the worker did before its commit (a claim committed on its
    // own, an ack sent early) is now all that is left of those jobs: each must still be done once.
    const names = freshQueues();
    const proxy = await stallingProxy(databaseUrl);
    cleanups.push(async () => proxy[Symbol.asyncDispose]());
    const faulty = createPgPool(proxy.url, DATABASE_POOL_OPTIONS);
    cleanups.push(() => faulty.end());
    const url = await api(names, { db: faulty });
    const worker = await workerProcess(names, {
      databaseUrl: proxy.url,
      hangAfter: 10,
      hangAfterEffectToo: true,
      prefetch: 10,
    });
    const alive = async (when: string) => {
      const stats = await worker.stats().catch(() => undefined);
      expect(stats, `the worker process died ${when}:\n${worker.output().slice(-1500)}`).toBeDefined();
      return stats!;
    };

    const first = await Promise.all(range(30).map(() => postOrder(url)));
    const held = await waitFor(
      () => worker.stats(),
      (s) => s.inFlight >= 10,
      { timeoutMs: 10_000 },
    );
    expect(held.inFlight, 'confirmations held inside their transactions').toBeGreaterThanOrEqual(10);

    // The reset, under load: orders and reads in flight while every database connection is cut.
    const during = range(20).map(() => answerBy(10_000, 'POST', `${url}/orders`, ORDER));
    const reads = range(10).map(() => answerBy(10_000, 'GET', `${url}/stats`));
    await proxy.kill();
    worker.release(); // the held jobs go on, on connections that are gone
    await waitFor(
      () => worker.stats().catch(() => held),
      (s) => s.inFlight === 0,
      { timeoutMs: 10_000 },
    );
    await alive('when its database connections were reset mid-transaction');
    const answers = [...(await Promise.all(during)), ...(await Promise.all(reads))];
    const wrong = answers.filter((a) => ![200, 202, 503].includes(a.status as number));
    expect(wrong, 'requests answered other than 200/202 or 503 while PostgreSQL connections were reset').toEqual([]);
    await proxy.revive();

    // Every order the API accepted is done once the database is back. (Done twice is the duplicate a
    // challenge counts; a job whose reply was lost with its connection is where the starter shows it.)
    // Within 10 s: the jobs given back wait one pause (a second) and are done at once (the whole test
    // takes under 2 s on the solution), and a job that was lost never comes back however long we wait.
    const ids = [...first, ...answers].filter((a) => a.status === 202).map((a) => a.json.jobId as string);
    expect(ids.length, 'orders accepted').toBeGreaterThanOrEqual(30);
    const counts = await waitFor(() => confirmations(ids), allDone, { timeoutMs: 10_000 });
    expect(notDone(counts), 'accepted jobs never done after the database came back').toBe(0);
    await alive('after the database came back');
  }, 60_000);

  it('a database error that is not an outage is a logged 500, not a 503', async () => {
    // Only an outage is worth a retry; a query the database rejects (a bug: a missing column, a typo)
    // fails the same way every time, and must reach the log instead of passing for "try again later".
    const pool = createPgPool(databaseUrl, DATABASE_POOL_OPTIONS);
    cleanups.push(() => pool.end());
    const url = await api(freshQueues(), { db: pool });
    // Once the API is built (its migration ran), every count names a column that does not exist.
    const query = pool.query.bind(pool) as (text: string, values?: unknown[]) => Promise<pg.QueryResult>;
    const buggy = (text: string, values?: unknown[]) =>
      query(text.replace('count(*)', 'count(no_such_column)'), values);
    pool.query = buggy as typeof pool.query;
    const answer = await answerBy(READ_BOUND_MS.down, 'GET', `${url}/stats`);
    expect(answer.status, 'GET /stats with a query the database rejects').toBe(500);
    expect(answer.retryAfter, 'a 500 says nothing about trying again').toBeNull();
    expect(logged.join('\n'), 'the log').toMatch(/no_such_column/);
  });

  it('RabbitMQ down or stalled: every order is answered within the publish timeout, down with a 503, never a hang or a 500', async () => {
    // The API publishes through proxies: one killed (connections closed, the port refused) and one stalled
    // (connected, then silent), after the publisher connected. A publish waits for the broker's confirm
    // up to the publish timeout, reconnects included; then the API answers 503. The starter's 202 for a
    // job the stalled broker never got is what a challenge counts; here, only that nothing hangs.
    const publishTimeoutMs = 2000; // the API's own is 5 s; a short one answers the stalled orders sooner
    const bound = publishTimeoutMs + 5000;
    const down = await stallingProxy(rabbit.url);
    const stalled = await stallingProxy(rabbit.url);
    // The two APIs (and their publishers) belong to a lab context of this test's own, closed after it
    // while the stalled connection is whole again: amqplib's close() never settles when the socket dies
    // during the close handshake, which a proxy killed just before the close would cause.
    const faultLab = await openLab(backgroundJobsLab);
    cleanups.push(
      () => down.kill(),
      () => stalled.kill(),
      () => faultLab.close(),
    );
    const urls = {
      down: await api(freshQueues(), { amqpUrl: down.url, publishTimeoutMs }, faultLab),
      stalled: await api(freshQueues(), { amqpUrl: stalled.url, publishTimeoutMs }, faultLab),
    };
    await down.kill();
    stalled.stall();
    const answers = await Promise.all(
      (['down', 'stalled'] as const).map(async (fault) => ({
        fault,
        orders: await Promise.all(range(3).map(() => answerBy(bound, 'POST', `${urls[fault]}/orders`, ORDER))),
        // The job status lives in the database: it answers whatever the broker does.
        read: await answerBy(bound, 'GET', `${urls[fault]}/jobs/${randomUUID()}`),
      })),
    );
    // What the stalled broker was sent reaches it now (into this test's queues, deleted after it).
    stalled.resume();
    for (const { fault, orders, read } of answers) {
      const late = orders.filter((order) => order.status === 'unanswered' || order.ms >= bound);
      expect(
        late,
        `RabbitMQ ${fault}: ${late.length} of ${orders.length} orders not answered within ${bound} ms`,
      ).toEqual([]);
      for (const order of orders) {
        // Down, the connection is gone and every version knows it: nothing can be queued.
        if (fault === 'down' || order.status !== 202)
          expect(order, `RabbitMQ ${fault}: ${order.request} answered ${order.status}`).toMatchObject(OUTAGE_ANSWER);
      }
      expect(read.status, `RabbitMQ ${fault}: GET /jobs/<id>`).toBe(200);
    }
  }, 30_000);
});

describe('baseline: an order sent again with its Idempotency-Key is the same order', () => {
  it('the same key and order is the same job (at once too), another order with it a 422, a malformed key a 400', async () => {
    const url = await api(freshQueues());
    // A client with a key does what a 503 asks: it sends the same request again, with the same key (on
    // a machine this busy, a connection or a confirm can take longer than the API waits). What is
    // checked is the key's promise: however many requests, one job.
    const post = async (key: string, body: unknown = ORDER) => {
      for (let attempt = 1; ; attempt++) {
        const answer = await answerBy(10_000, 'POST', `${url}/orders`, body, { 'idempotency-key': key });
        if (answer.status !== 503 || attempt === 3) return answer;
        await sleep(200);
      }
    };
    const key = randomUUID();
    const first = await post(key);
    const again = await post(key);
    expect([first.status, again.status], 'an order, then the same order with the same key').toEqual([202, 202]);
    expect(again.json.jobId, 'the job of the retry is the job of the first attempt').toBe(first.json.jobId);
    const racing = await Promise.all(range(5).map(() => post(`${key}-race`)));
    expect(
      racing.map((answer) => answer.status),
      `five requests racing with one key: ${JSON.stringify(racing.filter((a) => a.status !== 202).map((a) => a.json))}`,
    ).toEqual([202, 202, 202, 202, 202]);
    expect(new Set(racing.map((answer) => answer.json.jobId)).size, 'jobs for five requests racing with one key').toBe(
      1,
    );
    const other = await post(key, { ...ORDER, items: [{ sku: 'poster', quantity: 1 }] });
    expect(other.status, 'the same key with another order').toBe(422);
    expect(other.type).toMatch(/^application\/problem\+json/);
    for (const bad of ['a key with spaces', 'x'.repeat(256)]) {
      expect((await post(bad)).status, `Idempotency-Key ${JSON.stringify(bad.slice(0, 20))}`).toBe(400);
    }
  });

  it('RabbitMQ stalled: the 503 says the order may or may not be queued, and retrying it with its key confirms it once', async () => {
    // A publish the stalled broker did not confirm in time may still reach the queue when it wakes: a 503
    // saying "nothing was queued" invites a retry that orders twice. This client follows the 503: it sends
    // the order again with the same Idempotency-Key until it gets a 202; the broker wakes before the third
    // attempt, and everything it was sent meanwhile reaches the queue. Counted: confirmations of the order.
    const names = freshQueues();
    const sender = await workerHere(names);
    const proxy = await stallingProxy(rabbit.url);
    // The API's publisher belongs to a lab context of this test's own, closed while the proxy still passes
    // bytes (amqplib's close() never settles when its socket dies during the close handshake).
    const faultLab = await openLab(backgroundJobsLab);
    cleanups.push(
      () => proxy.kill(),
      () => faultLab.close(),
    );
    const url = await api(names, { amqpUrl: proxy.url, publishTimeoutMs: 1000 }, faultLab);
    const order = { email: `retry-${randomUUID()}@example.com`, items: [{ sku: 'mug', quantity: 1 }] };
    const key = randomUUID();
    proxy.stall();
    const answers: Awaited<ReturnType<typeof answerBy>>[] = [];
    for (let attempt = 1; attempt <= 6; attempt++) {
      if (attempt === 3) proxy.resume();
      const answer = await answerBy(15_000, 'POST', `${url}/orders`, order, { 'idempotency-key': key });
      answers.push(answer);
      if (answer.status === 202) break;
      expect(answer, `attempt ${attempt}`).toMatchObject(OUTAGE_ANSWER);
      expect(answer.json.detail, `what the 503 of attempt ${attempt} says about the order`).toMatch(
        /may or may not have been queued/,
      );
    }
    proxy.resume();
    expect(answers.at(-1)?.status, `answers: ${answers.map((answer) => answer.status).join(', ')}`).toBe(202);
    // Every copy that reached the queue is taken and done; then the worker stops (letting what it has in
    // progress finish), so nothing is still on its way when the confirmations are counted.
    const snapshot = async () => ({
      confirmations: (
        await db.query<{ n: number }>('SELECT count(*)::int AS n FROM confirmations WHERE email = $1', [order.email])
      ).rows[0]!.n,
      ready: await readyIn(names.queue),
      inFlight: sender.stats.inFlight,
    });
    await waitFor(snapshot, (s) => s.confirmations >= 1 && s.ready === 0 && s.inFlight === 0, { timeoutMs: 15_000 });
    await sender.worker.stop();
    const { confirmations: n } = await waitFor(snapshot, (s) => s.inFlight === 0, { timeoutMs: 10_000 });
    expect(n, `confirmations of one order sent ${answers.length} times with one Idempotency-Key`).toBe(1);
  }, 60_000);
});

// The waits below end on what they wait for, or on their own time limit (no quiet spell ends one early),
// so a version that never gets there pays the whole limit: the tests get room for it.
describe('challenges: what the tutorial worker gets wrong', { timeout: 60_000 }, () => {
  it('challenge: a worker killed mid-batch loses no jobs', async () => {
    const names = freshQueues();
    await declareQueues(names);
    const jobs = makeJobs(200);
    await admin.publishJobs(names, jobs);
    // Worker A does 40 jobs, then gets stuck on the next ones; it is killed while stuck.
    const a = await workerProcess(names, { hangAfter: 40 });
    const stuck = await waitFor(
      async () => ({ done: jobs.length - notDone(await confirmations(jobs)), calls: (await a.stats()).calls }),
      (seen) => seen.done >= 40 && seen.calls > 40,
      { timeoutMs: 10_000 },
    );
    expect(stuck.calls, 'worker A got stuck mid-batch').toBeGreaterThan(40);
    await a.kill();
    const consumers = await consumersReach(names.queue, (n) => n === 0, 10_000);
    // The broker requeues a dead consumer's unacked deliveries in the step that removes the consumer, so
    // every job A had not acked is waiting again now: a job neither done nor waiting (in the work queue
    // or a retry queue) was acked before it was done, and no worker will ever see it again. Counted at
    // once, instead of paying B's whole wait for jobs that cannot come back.
    const waiting = await waitingIn([names.queue, ...names.retryQueues]);
    const gone = consumers === 0 ? notDone(await confirmations(jobs)) - waiting : 0;
    let lost = gone;
    if (gone <= 0) {
      // A fresh worker B takes whatever A left in the queue. Done, or out of time: no quiet spell ends
      // it early (a busy machine can be quiet for seconds while a right version is still at work).
      // Or B has acked a job it has not done, and is idle: B talks through a proxy that counts its acks
      // and publishes. A right B acks a waiting job once it is done (or once a copy of it is published,
      // should it fail), each once: at most the waiting jobs done now (the jobs done now, less those
      // that were not waiting: every one of them done, or `gone` would have said so), plus its copies.
      // Read in this order: the acks; then B's confirmations in progress and database connections in
      // use, both none (so whatever B acked before has finished, its commit too); then the jobs done.
      const proxy = await brokerProxy();
      const b = await workerHere(names, { url: proxy.url });
      const seen = await waitFor(
        async () => {
          const acks = proxy.acks - proxy.publishes;
          const idle = b.stats.inFlight === 0 && b.pool.totalCount === b.pool.idleCount;
          const done = jobs.length - notDone(await confirmations(jobs));
          return { acks, done, ackedUndone: idle ? acks - (done - (jobs.length - waiting)) : 0 };
        },
        (s) => s.done === jobs.length || s.ackedUndone > 0,
        { timeoutMs: 20_000 },
      );
      expect(
        Math.max(0, seen.ackedUndone),
        `worker B acked ${seen.ackedUndone} of the jobs A left without doing them (or passing on a copy): gone from the queue for good`,
      ).toBe(0);
      lost = jobs.length - seen.done;
    }
    expect(
      lost,
      `${lost} of ${jobs.length} jobs were lost when worker A was killed: they had left the queue (acked) before they were done`,
    ).toBe(0);
  });

  it(`challenge: a poison job reaches the dead-letter queue after ${ATTEMPTS} attempts, with growing delays, and every other job is done`, async () => {
    const names = freshQueues();
    // Through a proxy that reads the delivery mode of everything the worker publishes.
    const proxy = await brokerProxy();
    const sender = await workerHere(names, { url: proxy.url });
    const good = makeJobs(10);
    const poison = makeJob({ items: [{ sku: 'gone', quantity: 1 }] }); // no such product: fails every time
    const traceparent = `00-${randomUUID().replaceAll('-', '')}-00f067aa0ba902b7-01`;
    await admin.publishJobs(names, good.slice(0, 5));
    await publishWithHeaders(names, poison, { traceparent });
    await admin.publishJobs(names, good.slice(5));
    const seen = await waitFor(
      async () => ({
        tries: sender.attemptsOf(poison.jobId).length,
        dead: await readyIn(names.deadQueue),
        done: good.length - notDone(await confirmations(good)),
      }),
      // Until the poison job is parked and the good ones are done, or it is clearly tried too often:
      // events, not a quiet spell (a busy machine can be quiet for seconds between two retries).
      (s) => (s.dead >= 1 && s.done === good.length) || s.tries > 2 * ATTEMPTS,
      { timeoutMs: 30_000 },
    );
    expect(
      seen.tries,
      `the poison job was tried ${seen.tries} times (and counting); it should be tried ${ATTEMPTS} times (once, then once per retry delay) and then parked`,
    ).toBe(ATTEMPTS);
    const times = sender.attemptsOf(poison.jobId);
    const waits = RETRY_DELAYS.map((_, i) => Math.round(times[i + 1]! - times[i]!));
    for (const [i, delay] of RETRY_DELAYS.entries()) {
      expect(
        waits[i],
        `waits between attempts were ${waits.join(', ')} ms; retry ${i + 1} must wait at least ${delay} ms`,
      ).toBeGreaterThanOrEqual(delay * 0.9);
    }
    const dead = await takeAll(rabbit.url, names.deadQueue);
    expect(dead.length, 'messages in the dead-letter queue').toBe(1);
    const headers = dead[0]!.properties.headers ?? {};
    expect(decodeJob(dead[0]!.content).jobId).toBe(poison.jobId);
    expect(
      String(headers[DEAD_LETTER_HEADERS.error]),
      `the "${DEAD_LETTER_HEADERS.error}" header: why it failed`,
    ).toMatch(/no product "gone"/);
    expect(Number(headers[DEAD_LETTER_HEADERS.attempts]), `the "${DEAD_LETTER_HEADERS.attempts}" header`).toBe(
      ATTEMPTS,
    );
    expect(dead[0]!.properties.deliveryMode, 'the dead letter is persistent (delivery mode 2)').toBe(2);
    // A retry copy is the job's only copy while it waits out its delay, in a durable queue: published
    // transient, a broker restart in that window drops it.
    expect(
      proxy.transientPublishes,
      "messages the worker published as transient (retry copies, dead letters): a broker restart drops them, and each is the job's only copy",
    ).toEqual([]);
    expect(
      headers.traceparent,
      "the producer's own header (a trace id), which every retry copy and the dead letter must carry",
    ).toBe(traceparent);
    // So are its own properties: without its content type, a consumer (a replay tool, a service in
    // another language) is left to guess how to read the dead letter's body.
    expect(
      { messageId: dead[0]!.properties.messageId, contentType: dead[0]!.properties.contentType },
      "the job's own properties, which every retry copy and the dead letter must keep",
    ).toEqual({ messageId: poison.jobId, contentType: 'application/json' });
    expect(
      dead[0]!.properties.expiration,
      'the expiration of the dead letter: a parked job is kept until someone takes it, not dropped unread',
    ).toBeUndefined();
    expect(seen.done, 'good jobs done').toBe(good.length);
    expect(
      await stopAndCountHeldClients(sender),
      'database connections the stopped worker still holds (taken for an attempt, never released)',
    ).toBe(0);
  });

  it('challenge: a redelivered or duplicated job causes no duplicate confirmation', async () => {
    const names = freshQueues();
    const proxy = await brokerProxy();
    // Worker A talks to the broker through the proxy, which from now on swallows everything A sends:
    // A receives the job and confirms it, but its ack never arrives. Then A is killed.
    const a = await workerProcess(names, { url: proxy.url });
    proxy.stall();
    const redelivered = makeJob();
    await admin.publishJobs(names, [redelivered]);
    await waitFor(() => confirmations([redelivered]), allDone, { timeoutMs: 10_000 });
    await a.kill();
    await consumersReach(names.queue, (n) => n === 0, 10_000);
    // Worker B gets the job again (the broker never heard it was done), and five jobs published
    // twice each, as a publisher does when it retries after a lost confirm. B's prefetch and pool hold
    // all eleven messages at once, and the confirmation of a job published twice waits for the other
    // copy (up to 4 s, or until that copy waits on its transaction): two copies in progress together is
    // the case a dedupe must survive, so the test makes it happen every time instead of on a lucky run.
    // (The redelivered job has no other copy on its way: A's is done.)
    const roomy = createPgPool(databaseUrl, { ...DATABASE_POOL_OPTIONS, max: 20 });
    cleanups.push(() => roomy.end());
    const twice = makeJobs(5);
    const meetCopiesOf = new Set(twice.map((job) => job.jobId));
    const b = await workerHere(names, { meetCopiesMs: 4000, meetCopiesOf, prefetch: 20, db: roomy });
    await admin.publishJobs(names, [...twice, ...twice]);
    // Until B has taken every message, each job is confirmed and nothing is in progress; then B stops
    // (finishing what it holds), so a duplicate still on its way has landed when they are counted.
    const snapshot = async () => ({
      counts: await confirmations([redelivered, ...twice]),
      ready: await readyIn(names.queue),
      inFlight: b.stats.inFlight,
    });
    await waitFor(snapshot, (s) => s.ready === 0 && allDone(s.counts) && s.inFlight === 0, { timeoutMs: 20_000 });
    await b.worker.stop();
    const { counts } = await waitFor(snapshot, (s) => s.inFlight === 0, { timeoutMs: 10_000 });
    const extra = duplicates(counts);
    expect(
      extra,
      `${extra} duplicate confirmation(s): the redelivered job was confirmed ${counts[redelivered.jobId]} time(s), the jobs published twice ${twice.map((job) => counts[job.jobId]).join(', ')} time(s)`,
    ).toBe(0);
    expect(notDone(counts), 'jobs never confirmed').toBe(0);
    // The sender stands for a mail provider: a call it got was an email sent, even if the database
    // rolled back the row recording it. So a job is looked up before its effect, never after: the
    // redelivered job (done by A) needs no call from B, and each job published twice one.
    const calls = {
      redelivered: b.attemptsOf(redelivered.jobId).length,
      twice: twice.map((job) => b.attemptsOf(job.jobId).length),
    };
    expect(
      calls,
      "worker B's calls to the sender per job: a copy of a done job that calls it and then rolls the row back has still sent the email",
    ).toEqual({ redelivered: 0, twice: twice.map(() => 1) });
    // A copy of a job already done is done too: acked, not a failure. Sent round the retries instead, it
    // fails again on every try and lands in the dead-letter queue beside jobs that really failed. B has
    // stopped (its jobs finished, their copies confirmed), so each such copy is still in one of these.
    const sentRound = await waitingIn([names.queue, ...names.retryQueues, names.deadQueue]);
    expect(
      sentRound,
      'copies of done jobs left in the work, retry or dead-letter queues: a duplicate was treated as a failed attempt',
    ).toBe(0);
  });

  it('challenge: a confirmation is committed with its claim: a job that fails after writing it leaves none behind, and its retry confirms it once', async () => {
    // Each job's first attempt writes its confirmation and then fails (the provider took it, then timed
    // out). The attempt failed, so what it wrote must go with it: the job is retried, and its retry is
    // the one confirmation. Written outside the claim's transaction, the first one stays, and the retry,
    // finding no claim, writes a second.
    const names = freshQueues();
    const sender = await workerHere(names, { failAfterFirstEffect: true });
    const jobs = makeJobs(3);
    await admin.publishJobs(names, jobs);
    // Until every job was tried twice, nothing is in progress, and each is confirmed.
    const seen = await waitFor(
      async () => ({
        tries: jobs.map((job) => sender.attemptsOf(job.jobId).length),
        inFlight: sender.stats.inFlight,
        counts: await confirmations(jobs),
      }),
      (s) => s.tries.every((n) => n >= 2) && s.inFlight === 0 && allDone(s.counts),
      { timeoutMs: 15_000 },
    );
    expect(seen.tries, 'attempts per job: the first fails after writing, the second succeeds').toEqual([2, 2, 2]);
    const counts = await confirmations(jobs);
    expect(
      values(counts),
      `confirmations per job: ${duplicates(counts)} written by failed attempts were kept (the effect must commit or roll back with the claim)`,
    ).toEqual([1, 1, 1]);
  });

  it('challenge: a message that is not a job is dead-lettered at once, and the worker lives to do the rest', async () => {
    // A producer with a bug sends something that is not a job: the test kit's garbage (an empty body,
    // text, JSON cut off, bytes that are not UTF-8, JSON of the wrong shape, null, a bare string), each
    // routed like a job. Retrying it cannot help; crashing on it is worse: a worker process that dies of
    // an unhandled rejection takes its other jobs with it (and the kit's "no process dies" says so).
    const names = freshQueues();
    await declareQueues(names);
    const worker = await workerProcess(names, {});
    const routed = await routedCount(names);
    const garbage = await publishMalformed(rabbit.url, { exchange: names.exchange, routingKey: JOB_ROUTING_KEY });
    const good = makeJobs(5);
    await admin.publishJobs(names, good);
    // Each message is routed to the work queue once when published, and once more per retry at most: a
    // count far past that is a message sent round again and again, which no wait would see parked.
    const maxRouted = (garbage.length + good.length) * 2 * ATTEMPTS;
    const seen = await waitFor(
      async () => ({
        alive: await worker.stats().then(
          () => true,
          () => false,
        ),
        dead: await readyIn(names.deadQueue),
        done: good.length - notDone(await confirmations(good)),
        routed: await routed(),
      }),
      (s) => !s.alive || (s.dead >= garbage.length && s.done === good.length) || s.routed > maxRouted,
      { timeoutMs: 15_000 },
    );
    expect(seen.alive, `the worker process died of a message that is not a job:\n${worker.output().slice(-1500)}`).toBe(
      true,
    );
    expect(
      seen.routed,
      `messages routed to the work queue for ${garbage.length} that are not jobs and ${good.length} jobs (at most ${2 * ATTEMPTS} times each): what cannot be read is being sent round again`,
    ).toBeLessThanOrEqual(maxRouted);
    expect(seen.done, 'good jobs done').toBe(good.length);
    const dead = await takeAll(rabbit.url, names.deadQueue);
    expect(dead.length, `messages in the dead-letter queue, of ${garbage.length} that are not jobs`).toBe(
      garbage.length,
    );
    const attempts = dead.map((message) => Number(message.properties.headers?.[DEAD_LETTER_HEADERS.attempts]));
    expect(attempts, 'attempts before each was parked: retrying a message that cannot be read cannot help').toEqual(
      garbage.map(() => 1),
    );
  });

  it('challenge: a failed job is let go only once its retry copy is queued, and given back alone: with its retry queue gone it stays, and is parked once the queue is back', async () => {
    // A failed job's retry copy must be with the broker before the original is acked. Here the first
    // retry queue is gone, so the broker cannot take the copy (mandatory: it comes back unroutable). A
    // worker that waits for the copy's confirm gives the job back and tries again; one that acks the
    // original without waiting has lost the job. Then the queues are declared again, as the learner's
    // code declares them, and the job goes its way to the dead-letter queue.
    // Four good jobs, delivered before the failing one, are held in progress while it is given back:
    // a give-back must return that one delivery, not every earlier one still in progress (a nack with
    // `allUpTo`), which the broker would deliver again while the first copies are still at work. The
    // worker talks through a proxy that keeps the broker's books: deliveries per job, and acks that
    // name a delivery its channel no longer holds (the broker closes the channel for those).
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const beside = makeJobs(4);
    const sender = await workerHere(names, { url: proxy.url, holdJobs: new Set(beside.map((job) => job.jobId)) });
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).deleteQueue(names.retryQueues[0]!);
    } finally {
      await connection.close();
    }
    const poison = makeJob({ items: [{ sku: 'gone', quantity: 1 }] });
    await admin.publishJobs(names, [...beside, poison]);
    // The third try comes after two pauses (a second each in the solution, about 2 s in all): 6 s leave
    // room for a busy machine, and a job acked without its copy has no third try at any time. The jobs
    // beside it are let go once it was given back the first time (its second try has begun).
    const started = performance.now();
    await waitFor(
      () => sender.attemptsOf(poison.jobId).length,
      (n) => n >= 2,
      { timeoutMs: 6000 },
    );
    sender.releaseHeld();
    const tries = await waitFor(
      () => sender.attemptsOf(poison.jobId).length,
      (n) => n >= 3,
      { timeoutMs: Math.max(0, started + 6000 - performance.now()) },
    );
    expect(
      tries,
      'attempts of a failed job whose retry copy the broker could not take (once, and gone: it was acked without its copy)',
    ).toBeGreaterThanOrEqual(3);
    // Kept, but not spun: a copy refused now is refused on the next try too, so giving the job back at
    // once circles as fast as round trips allow. Counted over the first two seconds (a busy machine only
    // makes a loop slower, so this bound cannot fail a right version): a few tries, not dozens.
    const first = sender.attemptsOf(poison.jobId)[0]!;
    await sleep(Math.max(0, first + REFUSED_WINDOW_MS - performance.now()));
    const inWindow = sender.attemptsOf(poison.jobId).filter((at) => at - first < REFUSED_WINDOW_MS).length;
    expect(
      inWindow,
      `attempts in the first ${REFUSED_WINDOW_MS} ms while every retry copy was refused: a job given back at once loops`,
    ).toBeLessThanOrEqual(REFUSED_MAX_TRIES);
    await declareQueues(names);
    expect(
      await parkedThenLeftAlone(sender, poison.jobId, names),
      'the job in the dead-letter queue once its retry copies could be queued, and its tries after that',
    ).toEqual({ parked: 1, triesAfter: 0 });
    // Stopped, the worker has finished and settled everything it held: the books are complete.
    await waitFor(() => confirmations(beside), allDone, { timeoutMs: 10_000 });
    await sender.worker.stop();
    // Parked once and nowhere else: a copy the broker refused once is not refused for ever. A publisher
    // that still counts a copy as returned once its queue is back gives the job back after every try
    // while the copies it published meanwhile go their way: the job multiplies.
    expect(
      { elsewhere: await waitingIn([names.queue, ...names.retryQueues]), parked: await readyIn(names.deadQueue) },
      'copies of the failed job once the worker has stopped: parked once, and waiting nowhere else',
    ).toEqual({ elsewhere: 0, parked: 1 });
    expect(
      beside.map((job) => proxy.deliveriesOf(job.jobId)),
      'deliveries of the four jobs in progress while the failed job was given back: a give-back returns that job alone; the others, given back with it, were delivered again while still at work',
    ).toEqual([1, 1, 1, 1]);
    expect(
      proxy.strayedSettlements,
      'acks and nacks naming a delivery their channel no longer held (settled already, or given back)',
    ).toEqual([]);
    expect(proxy.channelsClosedByBroker, 'channels the broker closed under the worker').toEqual([]);
    expect(values(await confirmations(beside)), 'confirmations of the jobs beside it').toEqual([1, 1, 1, 1]);
  });

  it('challenge: a short retry delay is not held up behind a long one that started first', async () => {
    // Two poison jobs wait for a retry at once: A, waiting first, for its second delay (5 s), and B, which
    // failed after A started waiting, for its first (100 ms). B must be back first. Which came back first
    // is an order of events: only a machine stalled for seconds could make a right version lose it.
    const delays = [100, 5000];
    const n = ++testNo;
    const names = jobQueueNames((part) => rabbit.name(`${n}.${part}`), delays);
    cleanups.push(() => admin.deleteJobQueue(names));
    const sender = await workerHere(names, { retryDelaysMs: delays });
    const [a, b] = [1, 2].map(() => makeJob({ items: [{ sku: 'gone', quantity: 1 }] })) as [
      ConfirmationJob,
      ConfirmationJob,
    ];
    const waitingForRetry = async () => {
      let waiting = 0;
      for (const queue of names.retryQueues) waiting += await readyIn(queue);
      return waiting;
    };
    await admin.publishJobs(names, [a]);
    // A's second attempt has failed and A waits for its 5 s retry (or it was retried at once: no delay queue).
    const aWaits = await waitFor(
      async () => ({ tries: sender.attemptsOf(a.jobId).length, waiting: await waitingForRetry() }),
      (s) => (s.tries >= 2 && s.waiting >= 1) || s.tries > 2,
      { timeoutMs: 10_000 },
    );
    expect(aWaits.tries, 'attempts of A before B is sent').toBe(2);
    await admin.publishJobs(names, [b]);
    const seen = await waitFor(
      () => ({ a: sender.attemptsOf(a.jobId).length, b: sender.attemptsOf(b.jobId).length }),
      (s) => s.b >= 2 || s.a >= 3,
      { timeoutMs: 15_000 },
    );
    expect(
      seen,
      `attempts when the first of them was retried: B (waiting 100 ms) must be retried before A (waiting 5 s since before B failed)`,
    ).toEqual({ a: 2, b: 2 });
  });

  it('challenge: jobs accepted while the broker connection drops are never lost, and publishing resumes', async () => {
    const names = freshQueues();
    const proxy = await brokerProxy();
    // A 3 s publish timeout (the API's own is 5 s): the stall below lasts only until the publishes
    // are seen dropped, and a right publisher reconnects after its first delay (100 ms). A second
    // instance of the API, hasty, waits only 300 ms for a confirm: its orders time out during the
    // stall, and a timeout is not a confirm.
    const linesBefore = logged.length;
    const url = await api(names, { amqpUrl: proxy.url, publishTimeoutMs: 3000 });
    const hastyUrl = await api(names, { amqpUrl: proxy.url, publishTimeoutMs: 300 });
    const before = await Promise.all(range(3).map(() => postOrder(url)));
    // The network path stalls: what the APIs send goes nowhere. Ten orders come in, and three to the
    // hasty instance, answered when its timeout passes; then the connection drops for good (and new
    // connections work again).
    proxy.stall();
    const during = range(10).map(() => postOrder(url));
    const timedOut = await Promise.all(range(3).map(() => postOrder(hastyUrl)));
    await waitFor(
      () => proxy.droppedPublishes,
      (n) => n >= 13,
      { timeoutMs: 5000 },
    );
    proxy.cut();
    const answered = await Promise.all(during);
    const after = await Promise.all(range(3).map(() => postOrder(url)));
    const accepted = [...before, ...answered, ...timedOut, ...after]
      .filter((a) => a.status === 202)
      .map((a) => a.json.jobId);
    await waitFor(
      () => readyIn(names.queue),
      (n) => n >= accepted.length,
      { timeoutMs: 3000 },
    );
    const taken = await takeAll(rabbit.url, names.queue);
    const queued = new Set(taken.map((m) => decodeJob(m.content).jobId));
    const transient = taken.filter((m) => m.properties.deliveryMode !== 2).length;
    const untyped = taken.filter((m) => m.properties.contentType !== 'application/json').length;
    const missing = (answers: typeof before) =>
      answers.filter((a) => a.status === 202 && !queued.has(a.json.jobId as string)).length;
    const lost = accepted.filter((id) => !queued.has(id as string)).length;
    expect(
      lost,
      `${lost} of the ${accepted.length} jobs the API answered 202 for are not in the queue (${missing(before)} answered before the connection stalled, ${missing(answered)} while it was stalled, ${missing(timedOut)} when the hasty instance's confirm timeout passed): "queued" was said before the broker had them`,
    ).toBe(0);
    expect(
      answered.map((a) => a.status),
      'orders whose publish was in flight when the connection dropped (unconfirmed: published again once the publisher has reconnected)',
    ).toEqual(range(10).map(() => 202));
    expect(
      after.map((a) => a.status),
      'orders sent after the connection came back (the publisher must reconnect)',
    ).toEqual([202, 202, 202]);
    expect(transient, 'jobs queued as transient messages (lost if the broker restarts): publish them persistent').toBe(
      0,
    );
    expect(
      untyped,
      'jobs queued without their content type (application/json), which a consumer in another language reads first',
    ).toBe(0);
    // The API's connections asked for a heartbeat too: a publisher is not always busy (a quiet night), and
    // one whose connection died without a word finds out only when an order's publish times out.
    expect(
      proxy.heartbeats.filter((seconds) => seconds === 0 || seconds > 30),
      "heartbeats (s) of the API's publisher connections that were off, or longer than 30 s",
    ).toEqual([]);
    expect(
      linesWithPassword(logged.slice(linesBefore), proxy.url),
      "lines the API logged, across a dropped connection, with the broker's password in them (a URL logged as it was given)",
    ).toEqual([]);
  });

  it('challenge: an order is accepted only once a queue holds its job: with the work queue gone it is a 503, tried again at a pace, and with the exchange gone too the publisher declares them again', async () => {
    // The broker confirms a message no queue takes (it routed it nowhere and is done with it): only a
    // `mandatory` publish comes back (basic.return) first. With the work queue deleted, an order must
    // not be a 202; the publisher may try again until its timeout, but paced (each try is a round
    // trip the broker answers at once, so an unpaced retry loops), counted at a proxy. Then the exchange
    // goes too: publishing to it makes the broker close the publisher's channel, with its connection
    // still up; a publisher that only watches its connection never publishes again, one that sets up
    // again declares the exchange and the queue, and the next order is queued.
    const names = freshQueues();
    const proxy = await brokerProxy();
    const publishTimeoutMs = 1000;
    const url = await api(names, { amqpUrl: proxy.url, publishTimeoutMs });
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).deleteQueue(names.queue);
      const published = proxy.publishes;
      const unroutable = await answerBy(publishTimeoutMs + 5000, 'POST', `${url}/orders`, ORDER);
      const tries = proxy.publishes - published;
      expect(unroutable.status, 'an order while no queue takes its job (the broker drops it)').toBe(503);
      // Retried with growing pauses (25, 50, 75 ms, ...), a publisher fits 9 tries in 1 s; an unpaced
      // one as many as round trips allow. A busy machine only slows a loop down.
      expect(tries, `publishes of one order in its ${publishTimeoutMs} ms while no queue took it`).toBeLessThanOrEqual(
        20,
      );
      await (await connection.createChannel()).deleteExchange(names.exchange);
    } finally {
      await connection.close();
    }
    const again = await answerBy(publishTimeoutMs + 5000, 'POST', `${url}/orders`, ORDER);
    expect(again.status, 'an order once the exchange was gone too (the publisher must set up again)').toBe(202);
    const queued = await takeAll(rabbit.url, names.queue);
    expect(
      queued.map((message) => decodeJob(message.content).jobId),
      'jobs in the work queue: the accepted one',
    ).toEqual([again.json.jobId]);
  });

  it('challenge: a publisher whose broker stops reading buffers a bounded number of jobs, not every one it is given, and loses none once the broker reads again', async () => {
    // A broker under a memory or disk alarm stops reading from the connections that publish (a
    // congested network does much the same). What the publisher writes backs up: into the kernel's
    // socket buffers (a few MB), then into amqplib's buffer for the channel, whose publish() returns
    // false once it holds 2,048 frames (1,024 of the jobs below, two frames each) and emits 'drain'
    // when it has room again. A publisher that goes on publishing regardless keeps every job it is
    // given in the process's memory for as long as the broker reads nothing, orders it has already
    // answered 503 included: an API taking orders all the while grows until it is killed, and every
    // job it held goes with it. Here the proxy reads nothing from the publisher while 6,000 large jobs
    // (20 MB) are published at once. Counted, once it stops growing: the bytes handed to amqplib's
    // publish() and not yet written to its socket. At most 2,048 jobs' worth: twice what amqplib takes
    // before its publish() says false, so a publisher that waits for 'drain', or caps its jobs in
    // flight, passes; one that hands amqplib every job holds about 5,000 of them (the kernel took
    // the rest).
    const names = freshQueues();
    const proxy = await brokerProxy();
    const amqplib = await watchAmqplib(names.exchange, Number(new URL(proxy.url).port));
    const publisher = await createPublisher(settings(names, { url: proxy.url, publishTimeoutMs: 30_000 }));
    cleanups.push(() => publisher.close());
    cleanups.push(async () => proxy.resumeReading()); // a failed test's publisher closes as it would
    const jobs = range(6000).map(() => makeJob({ items: LARGE_ORDER }));
    const jobBytes = encodeJob(jobs[0]!).length;
    const bound = 2048 * jobBytes;
    const asJobs = (bytes: number) => `${Math.round(bytes / jobBytes)} jobs (${(bytes / 1e6).toFixed(1)} MB)`;
    proxy.pauseReading();
    const before = { handed: amqplib.handed, written: amqplib.written };
    const answered = new Set<number>();
    const outcomes = jobs.map((job, i) =>
      publisher
        .publish(job)
        .then(
          () => 'queued' as const,
          () => 'refused' as const,
        )
        .finally(() => answered.add(i)),
    );
    const held = await waitUntilSteady(() => amqplib.handed - before.handed - (amqplib.written - before.written), {
      steadyMs: 1000,
      timeoutMs: 10_000,
    });
    const written = amqplib.written - before.written;
    // The count tells only if the kernel took less than the 6,000 jobs minus the bound: Linux lets a
    // socket's send buffer grow to net.ipv4.tcp_wmem's maximum (4 MB by default), and a receive buffer
    // that nothing reads keeps its first size (128 kB). A kernel that takes more needs more jobs.
    expect(
      written,
      `the publisher's socket took ${asJobs(written)} while the broker read nothing (the kernel's buffers hold them): with that much room, a publisher that hands amqplib every job could stay under the bound (the test needs more jobs)`,
    ).toBeLessThan(jobs.length * jobBytes - bound);
    expect(
      held,
      `${asJobs(held)} handed to amqplib's publish() and not yet written to its socket, of ${jobs.length} jobs published while the broker read nothing (its socket took ${asJobs(written)}): at most ${asJobs(bound)}. A publisher that goes on when publish() returns false holds every job it is given`,
    ).toBeLessThanOrEqual(bound);
    // Publishes still waiting for room now: unanswered, and not handed to amqplib (a publisher may
    // instead refuse at once what it cannot take).
    const waiting = range(jobs.length).filter((i) => !answered.has(i) && !amqplib.handedIds.has(jobs[i]!.jobId));
    // The broker reads again: the publishes waiting for room go on (at least one is queued before its
    // timeout), and every job whose publish said "queued" must be in the queue (a publish may be
    // refused instead, which the API answers with a 503).
    proxy.resumeReading();
    const settled = await Promise.all(outcomes);
    const queued = jobs.filter((_, i) => settled[i] === 'queued').map((job) => job.jobId);
    const waitedThenQueued = waiting.filter((i) => settled[i] === 'queued').length;
    expect(
      waiting.length === 0 || waitedThenQueued > 0,
      `${waiting.length} publishes were waiting for room when the broker read again, and none of them was queued before its 30 s timeout: a publisher waiting for room must go on when the socket drains`,
    ).toBe(true);
    await waitFor(
      () => readyIn(names.queue),
      (n) => n >= queued.length,
      { timeoutMs: 10_000 },
    );
    const inQueue = new Set((await takeAll(rabbit.url, names.queue)).map((m) => decodeJob(m.content).jobId));
    const lost = queued.filter((id) => !inQueue.has(id)).length;
    expect(
      lost,
      `${lost} of the ${queued.length} jobs whose publish resolved are not in the queue once the broker read again`,
    ).toBe(0);
  });

  it('challenge: a worker whose connection drops reconnects, does the jobs published afterwards, and settles the jobs it held across the drop once, on the channel that delivered them', async () => {
    // Two jobs are in progress (held inside their transactions) when the connection drops. Their
    // deliveries died with their channel: the broker requeues them and, once the worker is back, delivers
    // them again on a new channel, where they wait on the first copies' claims. When the first copies
    // finish, there is nothing left for them to ack: a delivery tag is a number counted afresh on every
    // channel, so their tags said on the new channel name other deliveries there (acked already, or not
    // yet: the wrong job), or none, and the broker closes the channel (PRECONDITION_FAILED). The worker
    // talks through a proxy that keeps the broker's books, so each such ack is seen.
    const names = freshQueues();
    const proxy = await brokerProxy();
    const linesBefore = logged.length;
    const across = makeJobs(2);
    const sender = await workerHere(names, { url: proxy.url, holdJobs: new Set(across.map((job) => job.jobId)) });
    const first = makeJobs(3);
    await admin.publishJobs(names, [...first, ...across]);
    const before = await waitFor(
      async () => ({ counts: await confirmations(first), inFlight: sender.stats.inFlight }),
      (s) => allDone(s.counts) && s.inFlight >= across.length,
      { timeoutMs: 10_000 },
    );
    expect(values(before.counts)).toEqual([1, 1, 1]);
    expect(before.inFlight, 'jobs in progress when the connection drops').toBe(across.length);
    proxy.cut();
    // The proxy lets new connections through at once, so a right version's first reconnect gets
    // through (the whole test takes under a second here).
    const later = 5;
    const missing = await publishAndCountNotDone(names, later);
    expect(
      missing,
      `${missing} of ${later} jobs published after the worker's connection dropped were never done: nothing reconnected and consumed again`,
    ).toBe(0);
    // Both of the worker's connections asked for a heartbeat: a connection that dies without a word (a
    // NAT or firewall forgetting it) is noticed within two missed beats, instead of RabbitMQ's 60 s
    // (or never, with heartbeats off).
    expect(proxy.heartbeats.length, "the worker's connections").toBeGreaterThanOrEqual(2);
    expect(
      proxy.heartbeats.filter((seconds) => seconds === 0 || seconds > 30),
      'heartbeats (s) of the worker connections that were off, or longer than 30 s',
    ).toEqual([]);
    // The held jobs, requeued when their connection went, are delivered again on the new channel. Then
    // the first copies go on; then the worker stops, finishing and settling what it holds, so the books
    // are complete.
    const redelivered = await waitFor(
      () => across.map((job) => proxy.deliveriesOf(job.jobId)),
      (n) => n.every((deliveries) => deliveries >= 2),
      { timeoutMs: 10_000 },
    );
    expect(redelivered, 'deliveries of the jobs held across the drop, before they are let go').toEqual([2, 2]);
    sender.releaseHeld();
    await waitFor(() => confirmations(across), allDone, { timeoutMs: 10_000 });
    await sender.worker.stop();
    expect(
      proxy.strayedSettlements,
      'acks naming a delivery their channel did not hold (a tag from the channel that delivered the job, said on another)',
    ).toEqual([]);
    expect(proxy.channelsClosedByBroker, 'channels the broker closed under the worker').toEqual([]);
    expect(values(await confirmations(across)), 'confirmations of the jobs held across the drop').toEqual([1, 1]);
    expect(
      linesWithPassword(logged.slice(linesBefore), proxy.url),
      "lines the worker logged, across a dropped connection, with the broker's password in them (a URL logged as it was given)",
    ).toEqual([]);
  });

  it('challenge: a worker whose consumer the broker cancels (its queue deleted, then declared again) consumes again', async () => {
    // RabbitMQ cancels a consumer when its queue goes (deleted by an operator, or lost with the node that
    // held it) and leaves the channel and the connection up: the consumer's callback gets null. A worker
    // that ignores it stays connected, looks healthy to every probe, and never takes a job again.
    const names = freshQueues();
    await declareQueues(names);
    await workerHere(names);
    await consumersReach(names.queue, (n) => n === 1);
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).deleteQueue(names.queue);
    } finally {
      await connection.close();
    }
    await declareQueues(names);
    const jobs = makeJobs(5);
    await admin.publishJobs(names, jobs);
    // Done, or out of time: a right worker consumes again at once, or after its first reconnect delay
    // (100 ms in the solution, whose whole run did not grow with this test): 5 s leave room for a
    // busy machine.
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 5000 });
    const missing = notDone(counts);
    expect(
      missing,
      `${missing} of ${jobs.length} jobs published after the worker's queue was declared again were never done: its cancelled consumer was never replaced`,
    ).toBe(0);
  });

  it('challenge: a worker never has more jobs in flight than its prefetch', async () => {
    const names = freshQueues();
    await declareQueues(names);
    const jobs = makeJobs(60);
    await admin.publishJobs(names, jobs); // all waiting before the worker starts
    const prefetch = 5;
    // The worker holds every job it starts until released, so nothing it was given is acked yet: the
    // queue's ready count then says exactly how many deliveries the broker let it have, whatever the
    // machine's speed. Without a prefetch (or with jobs acked on receipt) the broker hands it all 60.
    const sender = await workerHere(names, { prefetch, hangAfter: 0 });
    const held = await waitFor(
      async () => ({ inFlight: sender.stats.inFlight, ready: await readyIn(names.queue) }),
      (s) => s.inFlight >= prefetch,
      { timeoutMs: 10_000 },
    );
    const delivered = jobs.length - held.ready;
    expect(
      delivered,
      `the broker handed one worker with a prefetch of ${prefetch} ${delivered} of the ${jobs.length} jobs before it had finished any (${sender.stats.maxInFlight} in progress at once)`,
    ).toBeLessThanOrEqual(prefetch);
    expect(sender.stats.maxInFlight, 'jobs in progress at once').toBeLessThanOrEqual(prefetch);
    sender.releaseHeld();
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 15_000 });
    expect(notDone(counts), 'jobs never done').toBe(0);
  });

  it('challenge: a stopped worker finishes and acks the jobs it has started, and leaves the rest in the queue', async () => {
    // A deploy stops the worker (its process exits afterwards) while it holds jobs in progress. Stopping
    // means: take no more, finish those, ack them, then close. Closed at once, a job done just after is
    // never acked and waits in the queue to be done again; acked on receipt, a job the process had not
    // finished when it exited is gone.
    const names = freshQueues();
    await declareQueues(names);
    const jobs = makeJobs(20);
    await admin.publishJobs(names, jobs);
    const worker = await workerProcess(names, { hangAfter: 0, prefetch: 5 }); // every job held until released
    const started = await waitFor(
      () => worker.stats(),
      (s) => s.inFlight >= 5,
      { timeoutMs: 10_000 },
    );
    const stopped = worker.stop();
    // Once it has stopped consuming (or closed), the jobs in progress may go on.
    await consumersReach(names.queue, (n) => n === 0, 10_000);
    worker.release();
    await stopped;
    const counts = await confirmations(jobs);
    const queued = new Set((await takeAll(rabbit.url, names.queue)).map((m) => decodeJob(m.content).jobId));
    const done = jobs.filter((job) => (counts[job.jobId] ?? 0) > 0);
    const lost = jobs.filter((job) => !counts[job.jobId] && !queued.has(job.jobId)).length;
    const doneButQueued = done.filter((job) => queued.has(job.jobId)).length;
    expect(
      lost,
      `jobs neither done nor in the queue after the worker stopped with ${started.inFlight} in progress`,
    ).toBe(0);
    expect(
      doneButQueued,
      'jobs done while the worker stopped but never acked: back in the queue, to be done again',
    ).toBe(0);
    expect(done.length, 'jobs done: the ones in progress when stop() was called, and no more').toBe(started.inFlight);
  });

  it('challenge: while PostgreSQL is down, a job waits between tries instead of spinning, and is done once it is back', async () => {
    // Five jobs arrive while the database refuses connections. A job that cannot be done for now goes
    // back to the queue, and comes straight back: given back at once (or re-published at once), each
    // circles as fast as a refused connection allows, hundreds of times a second against a service
    // that is trying to restart. Counted: the worker's requests for a database connection while it is
    // down. A busy machine only makes a loop slower, so the bound cannot fail a right version.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await stallingProxy(databaseUrl);
    cleanups.push(async () => proxy[Symbol.asyncDispose]());
    const faulty = createPgPool(proxy.url, DATABASE_POOL_OPTIONS);
    cleanups.push(() => faulty.end());
    let connects = 0;
    const connect = faulty.connect.bind(faulty) as (...args: unknown[]) => unknown;
    faulty.connect = ((...args: unknown[]) => {
      connects++; // pool.query takes its connection through here too
      return connect(...args);
    }) as typeof faulty.connect;
    await workerHere(names, { db: faulty });
    await proxy.kill();
    const linesBefore = logged.length;
    const jobs = makeJobs(5);
    await admin.publishJobs(names, jobs);
    const outageMs = 3000;
    await sleep(outageMs);
    const duringOutage = connects;
    const outageLines = logged.slice(linesBefore);
    await proxy.revive();
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 15_000 });
    // Two tries a second per job is already generous: the solution pauses a second before each.
    const bound = jobs.length * 2 * (outageMs / 1000) + jobs.length;
    expect(
      duringOutage,
      `database connections asked for by a worker with ${jobs.length} jobs during a ${outageMs} ms outage: at most ${bound}`,
    ).toBeLessThanOrEqual(bound);
    expect(notDone(counts), 'jobs never done once the database was back').toBe(0);
    expect(await readyIn(names.deadQueue), 'jobs dead-lettered because the database was down').toBe(0);
    // Said, and said once: an outage fails every job alike, and a line per failed try is a log flood
    // (thousands a second on a busy queue) that buries everything else. The kit's own outage policy
    // is a line at most every 5 s; a 3 s outage gets one, two at most.
    expect(outageLines.length, 'lines logged during the outage: it must be reported').toBeGreaterThanOrEqual(1);
    expect(
      outageLines.length,
      `lines logged during a ${outageMs} ms outage with ${jobs.length} jobs (a line per failed try floods the log):\n${outageLines.slice(0, 5).join('\n')}`,
    ).toBeLessThanOrEqual(2);
  });
});

describe('baseline: what a broker restart keeps', () => {
  it('the retry and dead-letter queues are durable too: a job waiting for its next try, or parked, survives a broker restart', async () => {
    // A transient queue is gone after a broker restart, and the persistent messages in it with it: a
    // job waiting out its retry delay, or parked for a human to look at, is lost by a routine restart.
    // Declared again as durable (without its arguments), the broker agrees, or refuses over an
    // argument (a TTL it was declared with); it refuses over 'durable' only for a transient queue.
    const names = freshQueues();
    await declareQueues(names);
    await workerHere(names); // the worker's declarations too, where it makes its own
    for (const queue of [...names.retryQueues, names.deadQueue]) {
      const answer = await declaredDurableQueue(queue);
      expect(answer, `${queue}, declared again as durable`).not.toMatch(/'durable'/);
    }
  });

  it('the broker drops no job on its own: jobs are queued without an expiration, and no retry or dead-letter queue expires or drops what it holds', async () => {
    // A message in a queue is often the job's only copy: a job waiting for a worker, a retry copy
    // waiting out its delay, a job parked for a human. An expiration on the job ("not confirmed in time,
    // so not wanted later"), a TTL on the dead-letter queue ("so it cannot grow for ever"), a queue
    // that deletes itself when idle (x-expires) or drops its oldest message when full: each lets the
    // broker throw a job away that nobody decided to give up, long after every test has ended. So the
    // test reads what the learner declared: the job's properties, and each queue's arguments. A retry
    // queue's TTL is its delay (it dead-letters back), and a length limit that refuses new messages
    // (x-overflow reject-publish) loses nothing: the worker keeps a job whose copy is refused.
    const names = freshQueues();
    const publisher = await createPublisher(settings(names));
    cleanups.push(() => publisher.close());
    await publisher.publish(makeJob());
    const queued = await takeAll(rabbit.url, names.queue);
    expect(
      queued.map((message) => message.properties.expiration),
      'the expiration of the job the publisher queued: the broker drops it unread once that passes (a backlog, every worker down)',
    ).toEqual([undefined]);
    await workerHere(names); // the worker's declarations too, where it makes its own
    const dropping: Record<string, string[]> = {};
    for (const queue of [...names.retryQueues, names.deadQueue]) {
      const args = await queueArguments(queue);
      if (args === undefined) continue; // not declared: a version without it
      const refusesWhenFull = String(args['x-overflow'] ?? '').startsWith('reject-publish');
      const drops = [
        queue === names.deadQueue && 'x-message-ttl' in args ? 'x-message-ttl (parked jobs expire)' : '',
        'x-expires' in args ? 'x-expires (the queue deletes itself, and what it holds)' : '',
        ('x-max-length' in args || 'x-max-length-bytes' in args) && !refusesWhenFull
          ? 'a length limit that drops the oldest message'
          : '',
      ].filter(Boolean);
      if (drops.length > 0) dropping[queue] = drops;
    }
    expect(dropping, `queues that throw away a job nobody gave up: ${JSON.stringify(dropping)}`).toEqual({});
  });
});

/**
 * The arguments `queue` was declared with (undefined when it does not exist), read from the broker's
 * refusals: declared again with the ones known so far, the broker names the next argument that
 * differs and its value, until it agrees.
 */
async function queueArguments(queue: string): Promise<Record<string, unknown> | undefined> {
  if ((await admin.queueState(queue)) === undefined) return undefined;
  const known: Record<string, unknown> = {};
  for (let tries = 0; tries < 20; tries++) {
    const answer = await declaredDurableQueue(queue, known);
    if (answer === 'agreed') return known;
    const differs = /inequivalent arg '([^']+)' .* current is the value '([^']*)' of type '([^']+)'/.exec(answer);
    if (!differs) throw new Error(`${queue}, declared again as durable: ${answer}`);
    const [, name, value, type] = differs as unknown as [string, string, string, string];
    known[name] = type === 'longstr' ? value : type === 'bool' ? value === 'true' : Number(value);
  }
  throw new Error(`${queue}: the broker still refuses its arguments after 20 tries: ${JSON.stringify(known)}`);
}

/** Declares `queue` again as durable, with `args`: 'agreed', or why the broker refused. */
async function declaredDurableQueue(queue: string, args: Record<string, unknown> = {}): Promise<string> {
  const connection = await amqp.connect(rabbit.url);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {}); // a refusal closes the channel; the declaration rejects with it too
    await channel.assertQueue(queue, { durable: true, arguments: args });
    return 'agreed';
  } catch (error) {
    return (error as Error).message;
  } finally {
    await connection.close();
  }
}

describe('challenges: every way out of the queue is confirmed, bounded and kept', { timeout: 60_000 }, () => {
  it(`challenge: a job on its last attempt is let go only once its dead letter is queued: with the dead-letter queue gone it stays, and is parked once the queue is back`, async () => {
    // The dead letter is the job's last copy: the original may be acked only once the broker has
    // confirmed it, as for a retry copy. Here the dead-letter queue is gone, so the broker cannot take
    // it (mandatory: it comes back unroutable); a worker that acks without waiting for the confirm, or
    // sends the dead letter without awaiting it, has lost the job on its last attempt.
    const names = freshQueues();
    await declareQueues(names);
    const sender = await workerHere(names);
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).deleteQueue(names.deadQueue);
    } finally {
      await connection.close();
    }
    const poison = makeJob({ items: [{ sku: 'gone', quantity: 1 }] });
    await admin.publishJobs(names, [poison]);
    // Its attempts, then its last one again: kept, given back, and tried once more. A job acked without
    // its dead letter has no attempt after its last, at any time.
    const tries = await waitFor(
      () => sender.attemptsOf(poison.jobId).length,
      (n) => n > ATTEMPTS,
      { timeoutMs: 15_000 },
    );
    expect(
      tries,
      `attempts of a job whose dead letter the broker could not take (${ATTEMPTS}, and gone: it was acked without its dead letter)`,
    ).toBeGreaterThan(ATTEMPTS);
    await declareQueues(names);
    expect(
      await parkedThenLeftAlone(sender, poison.jobId, names),
      'the job in the dead-letter queue once it could be queued, and its tries after that',
    ).toEqual({ parked: 1, triesAfter: 0 });
    await sender.worker.stop();
    expect(
      { elsewhere: await waitingIn([names.queue, ...names.retryQueues]), parked: await readyIn(names.deadQueue) },
      'copies of the job once the worker has stopped: parked once (a dead letter refused once is not refused for ever), and waiting nowhere else',
    ).toEqual({ elsewhere: 0, parked: 1 });
  });

  it(`challenge: a failing job is parked after ${ATTEMPTS} attempts even when each attempt is made by another worker`, async () => {
    // Workers come and go (a deploy, autoscaling, a crash), and a retry copy comes back to whichever
    // worker is there. So the attempt count travels with the job (a header on its copy), not in a
    // worker's memory: counted per worker, every new worker starts again at one, and a poison job
    // circles for ever. Here each worker makes one try and is stopped; the next one takes the copy.
    const names = freshQueues();
    await declareQueues(names);
    const poison = makeJob({ items: [{ sku: 'gone', quantity: 1 }] });
    await admin.publishJobs(names, [poison]);
    const triesPerWorker: number[] = [];
    let parked = 0;
    while (parked === 0 && triesPerWorker.reduce((sum, n) => sum + n, 0) <= ATTEMPTS) {
      const sender = await workerHere(names);
      await waitFor(
        () => sender.attemptsOf(poison.jobId).length,
        (n) => n >= 1,
        { timeoutMs: 10_000 },
      );
      // stop() lets the try finish: its retry copy (or dead letter) confirmed, the original acked.
      await sender.worker.stop();
      triesPerWorker.push(sender.attemptsOf(poison.jobId).length);
      if (triesPerWorker.at(-1) === 0) break; // this worker never got the job: said below
      parked = await readyIn(names.deadQueue);
    }
    expect(
      { parked, tries: triesPerWorker.reduce((sum, n) => sum + n, 0) },
      `the poison job's tries by each new worker: ${triesPerWorker.join(', ')}; it must be parked after ${ATTEMPTS} in all`,
    ).toEqual({ parked: 1, tries: ATTEMPTS });
  });

  it('challenge: a worker that reconnected still has no more jobs in flight than its prefetch', async () => {
    // The prefetch belongs to a channel: every channel the worker opens after a dropped connection needs
    // it set again before it consumes. Set only on the first, the worker comes back from its first
    // network blip with no bound at all: the broker hands it the whole backlog.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const prefetch = 5;
    const sender = await workerHere(names, { url: proxy.url, prefetch, hangAfter: 0 }); // every job held
    await consumersReach(names.queue, (n) => n === 1, 10_000);
    proxy.cut();
    // Back: a second connection through the proxy has been set up, and it consumes (the first is gone).
    const back = await waitFor(
      async () => ({ connections: proxy.heartbeats.length, consumers: await consumersOf(names.queue) }),
      (s) => s.connections >= 2 && s.consumers === 1,
      { timeoutMs: 10_000 },
    );
    expect(back.connections, 'connections the worker set up through the proxy').toBeGreaterThanOrEqual(2);
    expect(back.consumers, 'consumers of the work queue after the drop').toBe(1);
    const jobs = makeJobs(40);
    await admin.publishJobs(names, jobs);
    const held = await waitFor(
      async () => ({ inFlight: sender.stats.inFlight, ready: await readyIn(names.queue) }),
      (s) => s.inFlight >= prefetch,
      { timeoutMs: 10_000 },
    );
    const delivered = jobs.length - held.ready;
    expect(
      delivered,
      `the broker handed a worker with a prefetch of ${prefetch}, back from a dropped connection, ${delivered} of ${jobs.length} jobs before it had finished any`,
    ).toBeLessThanOrEqual(prefetch);
    sender.releaseHeld();
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 20_000 });
    expect(notDone(counts), 'jobs never done').toBe(0);
  });

  it('challenge: a stopped worker stops within its grace even when a job never finishes, and that job goes back to the queue', async () => {
    // A deploy stops the worker and waits for it. A job that hangs (a call with no timeout, a lock
    // never granted) must not hold the stop for ever: after its grace the worker closes anyway, and
    // the broker puts the unfinished job back for another worker. A stop that waits without a bound is
    // killed by the orchestrator instead, with everything in progress at that moment.
    const names = freshQueues();
    await declareQueues(names);
    const stuck = makeJob();
    const sender = await workerHere(names, { holdJobs: new Set([stuck.jobId]) });
    await admin.publishJobs(names, [stuck]);
    await waitFor(
      () => sender.stats.inFlight,
      (n) => n >= 1,
      { timeoutMs: 10_000 },
    );
    const boundMs = 30_000; // the solution's grace is 10 s
    const outcome = await Promise.race([
      sender.worker.stop().then(() => 'stopped'),
      sleep(boundMs).then(() => 'still stopping'),
    ]);
    expect(outcome, `stop() with one job that never finishes, after ${boundMs / 1000} s`).toBe('stopped');
    const back = await waitFor(
      () => readyIn(names.queue),
      (n) => n >= 1,
      { timeoutMs: 10_000 },
    );
    expect(back, 'the unfinished job, back in the queue for another worker').toBe(1);
  });

  it('challenge: a worker and a publisher whose broker stops answering still stop and close, within a bound', async () => {
    // A deploy stops the worker and closes the API's publisher. Every step of a shutdown that waits
    // for the broker's answer (a consumer's cancel-ok, a channel's or a connection's close-ok) waits
    // for ever once the broker has stopped answering while the connection stays up, and the process
    // hangs until the orchestrator kills it. Here the proxy drops everything the two send from the
    // moment they are told to stop; the broker still sends its heartbeats, so neither client gives
    // the connection up, and with 60 s named in the URL the broker gives up on them only after about
    // two minutes. No job is in progress, so the bound is for the waits on the broker alone.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const url = new URL(proxy.url);
    url.searchParams.set('heartbeat', '60');
    const sender = await workerHere(names, { url: url.toString() });
    const publisher = await createPublisher(settings(names, { url: url.toString() }));
    cleanups.push(() => publisher.close());
    await consumersReach(names.queue, (n) => n === 1);
    proxy.stall();
    const boundMs = 30_000; // the solution bounds each wait on the broker at 2 s, and its grace is 10 s
    const within = (step: Promise<void>, done: string) =>
      Promise.race([
        step.then(
          () => done,
          (error: Error) => `failed: ${error.message}`,
        ),
        sleep(boundMs).then(() => `still waiting after ${boundMs / 1000} s`),
      ]);
    const outcome = Object.fromEntries(
      await Promise.all([
        within(sender.worker.stop(), 'stopped').then((what) => ['worker.stop()', what]),
        within(publisher.close(), 'closed').then((what) => ['publisher.close()', what]),
      ]),
    );
    expect(outcome, 'a worker stopped and a publisher closed while the broker answers nothing').toEqual({
      'worker.stop()': 'stopped',
      'publisher.close()': 'closed',
    });
  });
});

describe('baseline: a stalled database is an outage too, and an order leaves nothing behind', {
  timeout: 60_000,
}, () => {
  it('an API that accepts many orders adds no listener per order: no emitter warns of a leak', async () => {
    // A listener added per request (a 'return' or 'error' handler on the shared channel, say) is a
    // leak: memory and work that grow with every order until the process restarts. Node warns once an
    // emitter has more than ten listeners for one event; a hundred orders through one API must not
    // set that warning off.
    const names = freshQueues();
    const url = await api(names);
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      for (let round = 0; round < 10; round++) {
        const answers = await Promise.all(range(10).map(() => postOrder(url)));
        expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(202));
      }
      await sleep(50); // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(
      warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')),
      'listener leaks Node warned of',
    ).toEqual([]);
  });
  it('a database connection that goes silent for good is thrown away after its timeout, never used again: the worker goes on with a new one', async () => {
    // A NAT or firewall forgets an idle connection: no reset, nothing passes any more, while new
    // connections work. The query on it times out (the pool's query timeout); a client given back to the
    // pool as healthy after that is handed out again, each job's try on it times out too, and the worker
    // never does another job. The pool here holds one connection, so the next try gets whatever the
    // last one gave back.
    const names = freshQueues();
    await declareQueues(names);
    const database = await stallingProxy(databaseUrl);
    cleanups.push(async () => database[Symbol.asyncDispose]());
    const single = createPgPool(database.url, { ...DATABASE_POOL_OPTIONS, max: 1 });
    cleanups.push(() => single.end());
    await workerHere(names, { db: single });
    const first = makeJob();
    await admin.publishJobs(names, [first]);
    await waitFor(() => confirmations([first]), allDone, { timeoutMs: 10_000 });
    database.strand();
    const later = makeJobs(3);
    await admin.publishJobs(names, later);
    // One try times out (2.5 s), the job comes back after its pause (1 s) and meets a new connection.
    const counts = await waitFor(() => confirmations(later), allDone, { timeoutMs: 20_000 });
    expect(
      notDone(counts),
      `jobs not done in 20 s after the worker's one database connection went silent (its pool holds one: a client given back after a timeout is handed out again)`,
    ).toBe(0);
  });
  it('while PostgreSQL is stalled (a timeout, not a refusal), a job keeps its attempts and is done once it answers', async () => {
    // An outage is not only "connection refused": a database that hangs (a lock pile-up, a failover in
    // progress, a network path that drops packets) answers with timeouts, the connect timeout or the
    // query timeout. A worker that counts only refusals as an outage spends the job's attempts on them
    // and parks a good job as failed. The worker's pool gives up connecting after 300 ms here, so each
    // try is short; the database stays stalled until the job has come back more times than it has
    // attempts (or was parked), whatever the machine's speed.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const database = await stallingProxy(databaseUrl);
    cleanups.push(async () => database[Symbol.asyncDispose]());
    const slow = createPgPool(database.url, { ...DATABASE_POOL_OPTIONS, connectionTimeoutMillis: 300 });
    cleanups.push(() => slow.end());
    await workerHere(names, { url: proxy.url, db: slow });
    database.stall();
    const job = makeJob();
    await admin.publishJobs(names, [job]);
    const seen = await waitFor(
      async () => ({ deliveries: proxy.deliveriesOf(job.jobId), parked: await readyIn(names.deadQueue) }),
      (s) => s.deliveries > ATTEMPTS || s.parked > 0,
      { timeoutMs: 30_000 },
    );
    database.resume();
    expect(seen.parked, `jobs dead-lettered while the database timed out (after ${seen.deliveries} deliveries)`).toBe(
      0,
    );
    const counts = await waitFor(() => confirmations([job]), allDone, { timeoutMs: 15_000 });
    expect(values(counts), 'confirmations of the job once the database answered').toEqual([1]);
  });
});

describe('baseline: what a worker and a publisher keep when they stop, close or reconnect', () => {
  it('a heartbeat the broker URL names is the one the connections use', async () => {
    // A default heartbeat is for a URL that names none: an operator who set one in the URL (shorter, to
    // notice a dead peer sooner behind a load balancer that drops idle connections) must get that one.
    const names = freshQueues();
    const proxy = await brokerProxy();
    const url = new URL(proxy.url);
    url.searchParams.set('heartbeat', '7');
    const publisher = await createPublisher(settings(names, { url: url.toString() }));
    cleanups.push(() => publisher.close());
    await workerHere(names, { url: url.toString() });
    expect(
      proxy.heartbeats,
      'heartbeats (s) of the publisher and worker connections, with heartbeat=7 in the URL',
    ).toEqual([7, 7]);
  });

  it('a confirmed publish leaves no timer running behind it', async () => {
    // A publish waits for its confirm up to the publish timeout. A timer for that timeout left running
    // once the confirm came is held for the whole timeout: a busy API holds one per order of the last
    // few seconds (thousands), and a process that has closed everything cannot exit until the last one
    // fires. Counted: the timers set while ten orders are published and the publisher closes (theirs
    // only: a publisher another test left behind may set timers meanwhile), still set afterwards.
    const names = freshQueues();
    const publisher = await createPublisher(settings(names));
    cleanups.push(() => publisher.close());
    const timers = timersSetIn();
    await timers.run(async () => {
      await Promise.all(range(10).map(() => publisher.publish(makeJob())));
      await publisher.close();
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(timers.running, 'timers set by 10 confirmed publishes and a close, still running after them').toBe(0);
  });

  it('a publisher that is closed ends the publishes still trying at once, instead of at their timeout', async () => {
    // An API shutting down closes its publisher. A publish still trying then (no queue took its job, so
    // it is tried again until its timeout) can never succeed: it must end now, so its order is answered
    // and the shutdown is not held up for the whole publish timeout (10 s here).
    const names = freshQueues();
    const proxy = await brokerProxy();
    const publisher = await createPublisher(settings(names, { url: proxy.url, publishTimeoutMs: 10_000 }));
    cleanups.push(() => publisher.close());
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).deleteQueue(names.queue);
    } finally {
      await connection.close();
    }
    const before = proxy.publishes;
    let settled = false;
    const publishing = publisher.publish(makeJob()).then(
      () => 'queued',
      () => 'refused',
    );
    void publishing.finally(() => {
      settled = true;
    });
    await waitFor(
      () => proxy.publishes - before,
      (tries) => tries >= 3 || settled,
      { timeoutMs: 5000 },
    );
    await publisher.close();
    const boundMs = 3000;
    const outcome = await Promise.race([publishing, sleep(boundMs).then(() => 'still trying')]);
    expect(outcome, `a publish that was trying when its publisher closed, ${boundMs} ms after the close`).not.toBe(
      'still trying',
    );
  });

  it('a publish given up at its timeout is never sent afterwards: once the broker reads again, no job whose publish failed before it was written reaches the queue', {
    timeout: 60_000,
  }, async () => {
    // While the broker reads nothing (a memory or disk alarm), a publisher that waits for room in its
    // socket's buffer (the back-pressure challenge) holds every publish that comes after the buffer
    // filled. Their timeouts pass, and the API answers each order 503: not queued, send it again. A
    // publish that goes on waiting all the same, and writes its job once the broker reads again,
    // queues a job its client was told had failed: it is done anyway, and twice if the client sent it
    // again. Here the proxy reads nothing from the publisher while 4,000 large jobs are published at
    // once with a 3 s timeout, and reads again only once every publish has its answer. Counted, once
    // the queue has settled: the jobs in it whose publish failed before amqplib had been handed them.
    // (A job handed to amqplib before its publish failed is on its way and may well be queued: that is
    // the "may or may not be queued" of the 503, which an Idempotency-Key makes safe to retry.) The
    // settling goes through the publisher, so it must publish again once the socket drains.
    const names = freshQueues();
    const proxy = await brokerProxy();
    const amqplib = await watchAmqplib(names.exchange, Number(new URL(proxy.url).port));
    const publishTimeoutMs = 3000;
    const publisher = await createPublisher(settings(names, { url: proxy.url, publishTimeoutMs }));
    cleanups.push(() => publisher.close());
    cleanups.push(async () => proxy.resumeReading()); // a failed test's publisher closes as it would
    const jobs = range(4000).map(() => makeJob({ items: LARGE_ORDER }));
    const jobBytes = encodeJob(jobs[0]!).length;
    proxy.pauseReading();
    const writtenBefore = amqplib.written;
    /** Jobs whose publish failed while amqplib had not been handed them: never to be sent. */
    const failedUnsent = new Set<string>();
    let answered = 0;
    for (const job of jobs) {
      void publisher
        .publish(job)
        .catch(() => {
          if (!amqplib.handedIds.has(job.jobId)) failedUnsent.add(job.jobId);
        })
        .finally(() => answered++);
    }
    await waitFor(
      () => answered,
      (n) => n === jobs.length,
      { timeoutMs: publishTimeoutMs + 20_000 },
    );
    const written = amqplib.written - writtenBefore;
    // The count tells only if some jobs were left waiting for room: amqplib takes 1,024 of these jobs
    // before its publish() says false, the kernel's buffers take what the socket holds.
    expect(
      written,
      `the publisher's socket took ${Math.round(written / jobBytes)} of ${jobs.length} jobs while the broker read nothing: too few left waiting for room (the test needs more jobs)`,
    ).toBeLessThan((jobs.length - 2048) * jobBytes);
    proxy.resumeReading();
    // Settled once the queue's depth does not change across a round trip through the publisher itself
    // (a marker job, published until one is confirmed): a job the publisher writes late goes out ahead
    // of a marker published after it, so it is in the queue by the time the marker is confirmed.
    let depth = await readyIn(names.queue);
    let confirmedMarkers = 0;
    const settleBy = performance.now() + 30_000;
    while (performance.now() < settleBy) {
      const confirmed = await publisher.publish(makeJob()).then(
        () => true,
        () => false,
      );
      if (!confirmed) continue;
      confirmedMarkers++;
      const after = await readyIn(names.queue);
      if (after <= depth + 1) break; // the marker at most: nothing else arrived meanwhile
      depth = after;
    }
    expect(
      confirmedMarkers,
      'publishes confirmed in the 30 s after the broker read again: a publisher waiting for room must go on once the socket drains',
    ).toBeGreaterThan(0);
    const inQueue = new Set((await takeAll(rabbit.url, names.queue)).map((m) => decodeJob(m.content).jobId));
    const sentLate = [...failedUnsent].filter((id) => inQueue.has(id));
    const handedLate = [...failedUnsent].filter((id) => amqplib.handedIds.has(id)).length;
    expect(
      sentLate.length,
      `${sentLate.length} of the ${failedUnsent.size} jobs whose publish failed (a 503 for its order) before amqplib was handed them reached the queue once the broker read again (${handedLate} were handed to amqplib after their publish had failed): a publish that has given up must never send its job`,
    ).toBe(0);
  });

  it('a worker stopped while the broker is unreachable stops at once, without an error, and leaves nothing scheduled', async () => {
    // A deploy can stop a worker during a broker outage. With nothing to cancel or close on the broker,
    // stop() has nothing to wait for: it must end (and end the reconnect attempts), not fail or hang.
    // Ended, not merely returned: a stop() that skips the close when nothing is consuming leaves the
    // connection recovering, with its next try already scheduled, and one that bounds its waits with a
    // sleep it never cancels leaves that sleep. Counted once stop() has resolved: the timers the worker
    // and its stop() set (or the sockets they opened set, a reconnect's backoff) still set. A process
    // with one left cannot exit, and a reconnect left scheduled tries the broker for ever.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const timers = timersSetIn();
    const sender = await timers.run(() => workerHere(names, { url: proxy.url }));
    await consumersReach(names.queue, (n) => n === 1);
    await proxy[Symbol.asyncDispose](); // its connections closed, and new ones refused from now on
    await consumersReach(names.queue, (n) => n === 0);
    const boundMs = 5000;
    const outcome = await Promise.race([
      timers
        .run(() => sender.worker.stop())
        .then(
          () => 'stopped',
          (error: Error) => `failed: ${error.message}`,
        ),
      sleep(boundMs).then(() => `still stopping after ${boundMs} ms`),
    ]);
    expect(outcome, 'stop() of a worker whose broker is unreachable').toBe('stopped');
    await new Promise((resolve) => setImmediate(resolve));
    expect(
      timers.running,
      'timers the stopped worker still has set: a reconnect still scheduled (its connection never closed), or a wait of its stop() never cancelled',
    ).toBe(0);
  });

  it('a worker whose connection comes back while it is stopping does not consume again', async () => {
    // stop() waits for the jobs in progress. If the connection drops meanwhile and comes back, the
    // worker sets up again; consuming again then takes jobs from the queue into a worker that is about
    // to close, where each waits for the grace period to end and goes back to the queue.
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    const stuck = makeJob();
    const sender = await workerHere(names, { url: proxy.url, holdJobs: new Set([stuck.jobId]) });
    await admin.publishJobs(names, [stuck]);
    await waitFor(
      () => sender.stats.inFlight,
      (n) => n >= 1,
      { timeoutMs: 10_000 },
    );
    let stopped = false;
    const stopping = sender.worker.stop().finally(() => {
      stopped = true;
    });
    await consumersReach(names.queue, (n) => n === 0);
    proxy.cut();
    // Back: a second connection (a right worker reconnects after its first delay, 100 ms); then a
    // second to see whether it consumes (a worker that does consumes at once).
    await waitFor(
      () => proxy.heartbeats.length,
      (n) => n >= 2 || stopped,
      { timeoutMs: 5000 },
    );
    const consumers = await consumersReach(names.queue, (n) => n > 0 || stopped, 1000);
    sender.releaseHeld();
    await stopping;
    // The held job ends too (a version that stopped at once still has it in progress).
    await waitFor(
      () => sender.stats.inFlight,
      (n) => n === 0,
      { timeoutMs: 5000 },
    );
    expect(consumers, 'consumers of the work queue while the worker was stopping, back from a dropped connection').toBe(
      0,
    );
  });
  it('a worker and a publisher whose set-up the broker refuses keep trying without dying, and start once it is put right', async () => {
    // The broker refuses to declare a queue that exists with other arguments (PRECONDITION_FAILED) by
    // closing the channel that asked, in the middle of the set-up: here an operator has declared the
    // dead-letter queue by hand, transient. A version that declares it can only try again later, as
    // after a dropped connection, and must live to do so: once the queue is put right (deleted, and
    // declared again as the version declares it), it starts, and jobs flow. (An exception its handlers
    // throw meanwhile is an uncaught one in this process, which the kit's invariants report.)
    const names = freshQueues();
    const connection = await amqp.connect(rabbit.url);
    try {
      await (await connection.createChannel()).assertQueue(names.deadQueue, { durable: false });
    } finally {
      await connection.close();
    }
    // One proxy each, to count each one's refused set-ups.
    const proxies = { worker: await brokerProxy(), publisher: await brokerProxy() };
    // Started, or failed to: either ends the wait below.
    const settled = { worker: false, publisher: false };
    const worker = workerHere(names, { url: proxies.worker.url });
    const publisher = createPublisher(settings(names, { url: proxies.publisher.url }));
    void publisher.then((made) => cleanups.push(() => made.close()));
    const settle = (which: keyof typeof settled) => () => {
      settled[which] = true;
    };
    void worker.then(settle('worker'), settle('worker'));
    void publisher.then(settle('publisher'), settle('publisher'));
    // Each refused set-up is a channel the broker closed: two of each, or both started (a version that
    // does not declare that queue).
    await waitFor(
      () => ({
        worker: settled.worker || proxies.worker.channelsClosedByBroker.length >= 2,
        publisher: settled.publisher || proxies.publisher.channelsClosedByBroker.length >= 2,
      }),
      (refused) => refused.worker && refused.publisher,
      { timeoutMs: 10_000 },
    );
    const fixing = await amqp.connect(rabbit.url);
    try {
      await (await fixing.createChannel()).deleteQueue(names.deadQueue);
    } finally {
      await fixing.close();
    }
    const boundMs = 10_000;
    const ready = await Promise.race([
      Promise.all([worker, publisher]).then(
        ([sender, made]) => ({ sender, made }),
        (error: Error) => `failed: ${error.message.slice(0, 1500)}`,
      ),
      sleep(boundMs).then(() => `not started ${boundMs} ms after the queue was put right`),
    ]);
    if (typeof ready === 'string') expect.fail(`the worker and the publisher, after refused set-ups: ${ready}`);
    const jobs = makeJobs(3);
    for (const job of jobs) await ready.made.publish(job);
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 10_000 });
    expect(notDone(counts), 'jobs published once the worker and the publisher started').toBe(0);
  });
});

describe('challenges: a channel can die alone', { timeout: 60_000 }, () => {
  it('challenge: a worker whose channel the broker closes, its connection still up, sets up again and consumes', async () => {
    // RabbitMQ answers a channel-level error by closing that channel, not the connection: an ack naming
    // a delivery the channel does not hold (a bug, or a tag from before a reconnect), a queue declared
    // with other arguments, a publish to an exchange that is gone. The consumer dies with its channel,
    // and the connection, the only thing amqplib's recovery watches, stays up: a worker that does not
    // notice is connected, looks healthy to every probe, and never takes a job again. The proxy makes
    // the broker close the worker's channel (an ack of a delivery tag it never had).
    const names = freshQueues();
    await declareQueues(names);
    const proxy = await brokerProxy();
    await workerHere(names, { url: proxy.url });
    await consumersReach(names.queue, (n) => n === 1);
    proxy.closeChannels();
    const closed = await waitFor(
      () => proxy.channelsClosedByBroker.length,
      (n) => n >= 1,
      { timeoutMs: 5000 },
    );
    expect(closed, 'channels the broker closed under the worker').toBeGreaterThanOrEqual(1);
    const jobs = 5;
    const missing = await publishAndCountNotDone(names, jobs);
    expect(
      missing,
      `${missing} of ${jobs} jobs published after the broker closed the worker's channel were never done: nothing set up a channel and consumed again`,
    ).toBe(0);
  });
});
