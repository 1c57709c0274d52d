/**
 * The background-jobs spec. Baseline tests hold for any version; each `challenge:` fails on the
 * starter and passes on a worker that survives crashes. Everything is counted (jobs confirmed, jobs
 * lost, duplicates, attempts, jobs in progress at once), nothing is timed, except that retries must
 * wait at least their delay. Crashes are real: a worker in a child process killed with SIGKILL, and
 * connections cut by a TCP proxy in front of the real RabbitMQ.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createPublisher, startWorker } from '#job-queue';
import { listen, useRabbitMQ } from '@labs/test-kit';
import { openLab } from '@labs/lab-kit';
import backgroundJobsLab, { type BackgroundJobsLabOptions } from '../server/lab.ts';
import { openBrokerAdmin } from '../server/broker.ts';
import { confirmationsPerJob, createConfirmationSender, migrate } from '../server/confirmations.ts';
import {
  type ConfirmationJob,
  DEAD_LETTER_HEADERS,
  decodeJob,
  type JobQueueNames,
  jobQueueNames,
  type QueueSettings,
} from '../server/jobs.ts';
import { forkWorker } from '../server/worker-child.ts';
import { amqpProxy } from './amqp-proxy.ts';
import { makeJob, makeJobs, range, takeAll, waitFor } from './helpers.ts';

// One lab context (its own database, dropped at the end) and one set of queue names for this file.
const lab = await openLab(backgroundJobsLab);
const db = await lab.context.database();
await migrate(db);
const databaseUrl = db.options.connectionString as string;
const rabbit = await useRabbitMQ();
const admin = await openBrokerAdmin(rabbit.url);
afterAll(async () => {
  await lab.close();
  await admin.close();
  await rabbit[Symbol.asyncDispose]();
});

/** Small delays, so a poison job is given up in well under a second. */
const RETRY_DELAYS = [50, 100, 200];
const ATTEMPTS = 1 + RETRY_DELAYS.length;

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

/** The learner's code logs what goes wrong; a test collects it instead of printing it. */
const logged: string[] = [];
const log = (line: string) => void logged.push(line);

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

/** Declares the queues the way the API does (the learner's publisher), so jobs can wait before any worker. */
async function declareQueues(names: JobQueueNames): Promise<void> {
  const publisher = await createPublisher(settings(names));
  await publisher.close();
}

/** One of the learner's workers in this process, with a sender that counts; stopped after the test. */
async function workerHere(names: JobQueueNames, overrides: Partial<QueueSettings> & { workMs?: number } = {}) {
  const { workMs = 2, ...rest } = overrides;
  const sender = createConfirmationSender({ workMs });
  const worker = await startWorker(settings(names, rest), { db, sendConfirmation: sender.send });
  cleanups.push(() => worker.stop());
  return sender;
}

/** One of the learner's workers in a child process (the one a test kills); killed after the test. */
async function workerProcess(names: JobQueueNames, options: { url?: string; hangAfter?: number; prefetch?: number }) {
  const { url = rabbit.url, hangAfter, prefetch = 10 } = options;
  const child = await forkWorker({
    settings: { url, names, prefetch, retryDelaysMs: RETRY_DELAYS, publishTimeoutMs: 5000 },
    databaseUrl,
    workMs: 1,
    hangAfter,
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

/** An instance of the API (the lab as `lab serve` builds it, without its worker). */
async function api(names: JobQueueNames, options: Partial<BackgroundJobsLabOptions> = {}): Promise<string> {
  const { app } = await backgroundJobsLab.build(lab.context, {
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
const values = (counts: Record<string, number>) => Object.values(counts);
const allDone = (counts: Record<string, number>) => values(counts).every((n) => n >= 1);
const notDone = (counts: Record<string, number>) => values(counts).filter((n) => n === 0).length;
const duplicates = (counts: Record<string, number>) => values(counts).reduce((sum, n) => sum + Math.max(0, n - 1), 0);
const consumersOf = async (queue: string) => (await admin.queueState(queue))?.consumers ?? 0;
const readyIn = async (queue: string) => (await admin.queueState(queue))?.messages ?? 0;

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
});

describe('challenges: what the tutorial worker gets wrong', () => {
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
    // Once the broker has seen A go, a fresh worker B takes whatever A left in the queue.
    await waitFor(
      () => consumersOf(names.queue),
      (n) => n === 0,
      { timeoutMs: 10_000 },
    );
    await workerHere(names);
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 15_000, quietMs: 2000 });
    const lost = notDone(counts);
    expect(
      lost,
      `${lost} of ${jobs.length} jobs were lost when worker A was killed: they had left the queue (acked) before they were done`,
    ).toBe(0);
  });

  it(`challenge: a poison job reaches the dead-letter queue after ${ATTEMPTS} attempts, with growing delays, and every other job is done`, async () => {
    const names = freshQueues();
    const sender = await workerHere(names);
    const good = makeJobs(10);
    const poison = makeJob({ items: [{ sku: 'gone', quantity: 1 }] }); // no such product: fails every time
    await admin.publishJobs(names, [...good.slice(0, 5), poison, ...good.slice(5)]);
    const seen = await waitFor(
      async () => ({
        tries: sender.attemptsOf(poison.jobId).length,
        dead: await readyIn(names.deadQueue),
        done: good.length - notDone(await confirmations(good)),
      }),
      (s) => (s.dead >= 1 && s.done === good.length) || s.tries > 2 * ATTEMPTS,
      { timeoutMs: 10_000, quietMs: 3000 },
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
    expect(seen.done, 'good jobs done').toBe(good.length);
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
    await waitFor(
      () => consumersOf(names.queue),
      (n) => n === 0,
      { timeoutMs: 10_000 },
    );
    // Worker B gets the job again (the broker never heard it was done), and five jobs published
    // twice each, as a publisher does when it retries after a lost confirm.
    await workerHere(names);
    const twice = makeJobs(5);
    await admin.publishJobs(names, [...twice, ...twice]);
    // Until B has taken every message and each job is confirmed; then until nothing changes for
    // half a second, so a duplicate still on its way has landed.
    const snapshot = async () => ({
      counts: await confirmations([redelivered, ...twice]),
      ready: await readyIn(names.queue),
    });
    await waitFor(snapshot, (s) => s.ready === 0 && allDone(s.counts), { timeoutMs: 15_000 });
    const { counts } = await waitFor(snapshot, () => false, { timeoutMs: 10_000, quietMs: 500 });
    const extra = duplicates(counts);
    expect(
      extra,
      `${extra} duplicate confirmation(s): the redelivered job was confirmed ${counts[redelivered.jobId]} time(s), the jobs published twice ${twice.map((job) => counts[job.jobId]).join(', ')} time(s)`,
    ).toBe(0);
    expect(notDone(counts), 'jobs never confirmed').toBe(0);
  });

  it('challenge: jobs accepted while the broker connection drops are never lost, and publishing resumes', async () => {
    const names = freshQueues();
    const proxy = await brokerProxy();
    const url = await api(names, { amqpUrl: proxy.url, publishTimeoutMs: 5000 });
    const before = await Promise.all(range(3).map(() => postOrder(url)));
    // The network path stalls: what the API sends goes nowhere. Ten orders come in; then the
    // connection drops for good (and new connections work again).
    proxy.stall();
    const during = range(10).map(() => postOrder(url));
    await waitFor(
      () => proxy.droppedPublishes,
      (n) => n >= 10,
      { timeoutMs: 5000 },
    );
    proxy.cut();
    const answered = await Promise.all(during);
    const after = await Promise.all(range(3).map(() => postOrder(url)));
    const accepted = [...before, ...answered, ...after].filter((a) => a.status === 202).map((a) => a.json.jobId);
    await waitFor(
      () => readyIn(names.queue),
      (n) => n >= accepted.length,
      { timeoutMs: 3000, quietMs: 500 },
    );
    const queued = new Set((await takeAll(rabbit.url, names.queue)).map((m) => decodeJob(m.content).jobId));
    const missing = (answers: typeof before) =>
      answers.filter((a) => a.status === 202 && !queued.has(a.json.jobId as string)).length;
    const lost = accepted.filter((id) => !queued.has(id as string)).length;
    expect(
      lost,
      `${lost} of the ${accepted.length} jobs the API answered 202 for are not in the queue (${missing(before)} answered before the connection stalled, ${missing(answered)} while it was stalled): "queued" was said before the broker had them`,
    ).toBe(0);
    expect(
      after.map((a) => a.status),
      'orders sent after the connection came back (the publisher must reconnect)',
    ).toEqual([202, 202, 202]);
  });

  it('challenge: a worker whose connection drops reconnects and does the jobs published afterwards', async () => {
    const names = freshQueues();
    const proxy = await brokerProxy();
    await workerHere(names, { url: proxy.url });
    const first = makeJobs(3);
    await admin.publishJobs(names, first);
    expect(values(await waitFor(() => confirmations(first), allDone, { timeoutMs: 10_000 }))).toEqual([1, 1, 1]);
    proxy.cut();
    const later = makeJobs(5);
    await admin.publishJobs(names, later);
    // Done, or nothing happening for 3 s: no jobs done and no consumer coming back.
    const { counts } = await waitFor(
      async () => ({ counts: await confirmations(later), consumers: await consumersOf(names.queue) }),
      (s) => allDone(s.counts),
      { timeoutMs: 15_000, quietMs: 3000 },
    );
    const missing = notDone(counts);
    expect(
      missing,
      `${missing} of ${later.length} jobs published after the worker's connection dropped were never done: nothing reconnected and consumed again`,
    ).toBe(0);
  });

  it('challenge: a worker never has more jobs in flight than its prefetch', async () => {
    const names = freshQueues();
    await declareQueues(names);
    const jobs = makeJobs(60);
    await admin.publishJobs(names, jobs); // all waiting before the worker starts
    const prefetch = 5;
    const sender = await workerHere(names, { prefetch, workMs: 5 });
    const counts = await waitFor(() => confirmations(jobs), allDone, { timeoutMs: 15_000, quietMs: 2000 });
    expect(
      sender.stats.maxInFlight,
      `up to ${sender.stats.maxInFlight} jobs were in progress at once in one worker with a prefetch of ${prefetch}: the broker pushed it everything it had`,
    ).toBeLessThanOrEqual(prefetch);
    expect(notDone(counts), 'jobs never done').toBe(0);
  });
});
