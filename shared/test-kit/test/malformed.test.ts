/**
 * The malformed-message helpers against a real RabbitMQ, with real consumers in child processes: a
 * careful one sets every bad body aside (dead-lettered) and goes on; a naive one dies on the first,
 * and the kit's *no process dies* says so. Against a real Kafka: a consumer that skips garbage commits
 * past it; one that throws on it never does, and the helper says so.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import amqp from 'amqplib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { resolveService, ServiceUnavailableError, stopServices } from '@labs/services';
import {
  expectNoProcessDied,
  InvariantError,
  MALFORMED_PAYLOADS,
  malformedMessagesSent,
  produceMalformed,
  publishMalformed,
  queueDepth,
  takeProcessIncidents,
  untilGroupCommitted,
  untilQueueHolds,
  useKafka,
  useRabbitMQ,
  watchProcesses,
} from '../src/index.ts';

const CONSUMER = new URL('./fixtures/rabbit-consumer.ts', import.meta.url);

afterAll(stopServices);
watchProcesses();
const started: ChildProcess[] = [];
afterEach(() => {
  for (const child of started.splice(0)) child.kill('SIGKILL');
  takeProcessIncidents();
});

/** A work queue whose rejected messages go to a dead-letter queue, both removed after the test. */
async function workQueue(rabbit: Awaited<ReturnType<typeof useRabbitMQ>>) {
  const [jobs, deadLetters] = [rabbit.name('jobs'), rabbit.name('jobs.dead')];
  const connection = await amqp.connect(rabbit.url);
  const channel = await connection.createChannel();
  await channel.assertQueue(deadLetters, { durable: false });
  await channel.assertQueue(jobs, {
    durable: false,
    arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': deadLetters },
  });
  await connection.close();
  return { jobs, deadLetters };
}

/** Starts the fixture consumer on `queue`; resolves once it consumes. Its stdout lines are collected. */
async function consumer(url: string, queue: string, mode: 'naive' | 'careful') {
  const child = fork(CONSUMER, [url, queue, mode], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  started.push(child);
  const closed = once(child, 'close');
  let out = '';
  child.stdout!.on('data', (chunk) => {
    out += String(chunk);
  });
  while (!out.includes('ready')) await once(child.stdout!, 'data');
  return { child, closed, output: () => out };
}

describe('publishMalformed (RabbitMQ)', () => {
  it('sends every kind of garbage; a careful consumer dead-letters each and still does the next good job', async () => {
    await using rabbit = await useRabbitMQ();
    const { jobs, deadLetters } = await workQueue(rabbit);
    const worker = await consumer(rabbit.url, jobs, 'careful');
    const before = malformedMessagesSent();
    const sent = await publishMalformed(rabbit.url, { queue: jobs });
    expect(sent).toHaveLength(MALFORMED_PAYLOADS.length);
    expect(malformedMessagesSent() - before).toBe(sent.length);
    await untilQueueHolds(rabbit.url, deadLetters, sent.length);
    await publishMalformed(
      rabbit.url,
      { queue: jobs },
      { payloads: [{ name: 'a good job', body: Buffer.from('{"id":"j1"}') }] },
    );
    while (!worker.output().includes('done j1')) await once(worker.child.stdout!, 'data');
    expect(await queueDepth(rabbit.url, jobs)).toBe(0);
    expect(() => expectNoProcessDied()).not.toThrow();
  });

  it('a naive consumer dies on the first malformed body, and the kit reports it', async () => {
    await using rabbit = await useRabbitMQ();
    const { jobs } = await workQueue(rabbit);
    const worker = await consumer(rabbit.url, jobs, 'naive');
    await publishMalformed(rabbit.url, { queue: jobs }, { payloads: [MALFORMED_PAYLOADS[1]!] });
    await worker.closed;
    await new Promise((resolve) => setImmediate(resolve));
    expect(() => expectNoProcessDied()).toThrow(InvariantError);
  });

  it('fails clearly when a dead-letter queue never fills', async () => {
    await using rabbit = await useRabbitMQ();
    const { deadLetters } = await workQueue(rabbit);
    await expect(untilQueueHolds(rabbit.url, deadLetters, 1, 300)).rejects.toThrow(
      /holds 0 message\(s\) after 300 ms; expected at least 1/,
    );
  });
});

describe('produceMalformed (Kafka)', () => {
  /** Kafka, or a skip where none can be had (no Java here): CI always has one. */
  async function kafkaHere(): Promise<boolean> {
    try {
      await resolveService('kafka', { log: null });
      return true;
    } catch (error) {
      if (!(error instanceof ServiceUnavailableError)) throw error;
      expect(process.env.CI, 'CI must test produceMalformed: run ./lab setup kafka first').not.toBe('true');
      return false;
    }
  }

  it.for([
    ['skips each bad value, so its group commits past them', true],
    ['throws on a bad value, so its group never commits past it', false],
  ] as const)('a consumer that %s', { timeout: 60_000 }, async ([, careful], ctx) => {
    if (!(await kafkaHere())) return ctx.skip();
    await using kafka = await useKafka();
    const [topic, groupId] = [kafka.topic('orders'), kafka.groupId('billing')];
    const admin = await kafka.admin();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    const produced = await produceMalformed(kafka.kafka, topic);
    expect(produced.map((p) => p.offset)).toEqual(produced.map((_p, i) => String(i)));
    const consumer = await kafka.consumer(groupId, { retry: { retries: 0 } });
    await consumer.subscribe({ topic, fromBeginning: true });
    void consumer.run({
      eachMessage: async ({ message }) => {
        try {
          const order = JSON.parse(message.value?.toString() ?? '') as { id?: unknown } | null;
          if (typeof order?.id !== 'string') throw new Error('not an order');
        } catch (error) {
          if (!careful) throw error; // kafkajs retries it: the partition is stuck on it
        }
      },
    });
    const outcome = untilGroupCommitted(kafka.kafka, groupId, topic, produced, careful ? 30_000 : 8000);
    if (careful) await outcome;
    else await expect(outcome).rejects.toThrow(/has not committed past the malformed messages .* partition 0 at/);
  });
});
