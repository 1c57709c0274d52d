/**
 * The event-streaming spec: a real Kafka broker, a real PostgreSQL, consumers in one group, worker
 * processes killed for real. Tests count what reached the projection (events applied, applied twice,
 * applied out of order, never applied) and what the group and the dead-letter topic hold; none of them
 * measures speed. Waits are bounded polls for a condition, never sleeps.
 *
 * Each test has its own topic, group and account ids (`scenario`), on this file's own database.
 */
import type { Kafka } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { createPublisher, startProjector } from '#event-pipeline';
import { startLab } from '@labs/lab-kit';
import { createPgPool, resolveService } from '@labs/services';
import { useKafka, usePostgres } from '@labs/test-kit';
import { poisonValue } from '../server/app.ts';
import {
  type AccountEvent,
  expectedBalances,
  generateEvents,
  InvalidEventError,
  parseEvent,
} from '../server/events.ts';
import { caughtUp, committed, consumerSettings, createKafka, ensureTopics, messagesIn } from '../server/kafka.ts';
import lab from '../server/lab.ts';
import type { Projector } from '../server/pipeline.ts';
import { listAccounts, migrate, projectionStats, requirePostgresServer } from '../server/projection.ts';
import { countCrashes, members, startWorker, until } from './helpers.ts';

const kafka = await useKafka();
const database = await usePostgres();
requirePostgresServer((await resolveService('postgres')).provider);
const pool = createPgPool(database.url);
await migrate(pool);
const admin = await kafka.admin();
afterAll(async () => {
  await pool.end();
  await kafka[Symbol.asyncDispose]();
  await database[Symbol.asyncDispose]();
});

/** A topic, its dead-letter topic, a group and account ids that only one test uses. */
async function scenario(name: string) {
  const topic = kafka.topic(name);
  const deadLetterTopic = kafka.topic(`${name}-dlt`);
  await ensureTopics(admin, [topic, deadLetterTopic]);
  const prefix = `${name}-`;
  return {
    topic,
    deadLetterTopic,
    groupId: kafka.groupId(name),
    prefix,
    accounts: (count: number) => Array.from({ length: count }, (_, i) => `${prefix}acct-${i + 1}`),
    stats: () => projectionStats(pool, prefix),
    balances: async () => new Map((await listAccounts(pool, prefix)).map((a) => [a.accountId, a.balance])),
  };
}
type Scenario = Awaited<ReturnType<typeof scenario>>;

/** Publishes `events` with the pipeline's publisher, in sends of `perSend`. */
async function publish(sc: Scenario, events: readonly AccountEvent[], perSend = events.length): Promise<void> {
  const publisher = await createPublisher(createKafka(kafka.brokers), sc.topic);
  try {
    for (let i = 0; i < events.length; i += perSend) await publisher.publish(events.slice(i, i + perSend));
  } finally {
    await publisher.close();
  }
}

/** `count` projectors of the scenario's group in this process, stopped on dispose. */
async function projectors(sc: Scenario, count: number, client: Kafka = createKafka(kafka.brokers)) {
  const running: Projector[] = [];
  const group = {
    async stop() {
      await Promise.all(running.splice(0).map((p) => p.stop()));
    },
    [Symbol.asyncDispose]: () => group.stop(),
  };
  try {
    for (let i = 0; i < count; i++) {
      const consumer = consumerSettings(sc.groupId);
      running.push(
        await startProjector({ kafka: client, pool, topic: sc.topic, deadLetterTopic: sc.deadLetterTopic, consumer }),
      );
    }
  } catch (error) {
    await group.stop();
    throw error;
  }
  return group;
}

describe('baseline: what every version of the pipeline does', () => {
  it('one projector applies every published event once, and every balance adds up', async () => {
    const sc = await scenario('single');
    const events = generateEvents(sc.accounts(3), 20);
    await publish(sc, events);
    await using group = await projectors(sc, 1);
    const done = await until(async () => (await sc.stats()).distinctEvents === events.length, 20_000);
    await group.stop();
    const stats = await sc.stats();
    expect(done, `${stats.distinctEvents} of ${events.length} events applied within 20 s`).toBe(true);
    expect(stats.entries, 'entries written: one per event').toBe(events.length);
    expect(await sc.balances()).toEqual(expectedBalances(events));
  }, 30_000);

  it('the API publishes events and serves the balances the projector keeps', async () => {
    await using running = await startLab(lab, { with: { projectors: 1 } });
    const post = (body: unknown) =>
      fetch(`${running.url}/api/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const seqs = [];
    for (const amount of [500, 700]) {
      const res = await post({ accountId: 'api-alice', type: 'deposited', amount });
      expect(res.status).toBe(202);
      seqs.push(((await res.json()) as { event: AccountEvent }).event.seq);
    }
    expect((await post({ accountId: 'api-alice', type: 'withdrawn', amount: 200 })).status).toBe(202);
    expect(seqs, 'each account numbers its events 1, 2, 3, ...').toEqual([1, 2]);

    let account: { balance?: number; eventsApplied?: number } = {};
    const applied = await until(async () => {
      const res = await fetch(`${running.url}/api/accounts/api-alice`);
      if (res.status === 200) account = (await res.json()) as typeof account;
      return account.eventsApplied === 3;
    }, 20_000);
    expect(applied, `applied ${account.eventsApplied ?? 0} of 3 events within 20 s`).toBe(true);
    expect(account.balance).toBe(1000);
    const stats = (await (await fetch(`${running.url}/api/stats`)).json()) as Record<string, number>;
    expect(stats).toMatchObject({ duplicates: 0, outOfOrder: 0, deadLettered: 0 });
  }, 30_000);

  it('answers bad input with a 4xx problem, never a stack trace', async () => {
    await using running = await startLab(lab, { with: { projectors: 0 } });
    const send = (path: string, body: string) =>
      fetch(`${running.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const cases: [Response, number, RegExp][] = [
      [await send('/api/events', '{"accountId":"a b","type":"deposited","amount":1}'), 400, /accountId/],
      [await send('/api/events', '{"accountId":"bob","type":"stolen","amount":1}'), 400, /type/],
      [await send('/api/events', '{"accountId":"bob","type":"deposited","amount":-5}'), 400, /amount/],
      [await send('/api/events', '{"accountId":'), 400, /not valid JSON/],
      [await send('/api/poison', '{}'), 400, /accountId/],
      [await fetch(`${running.url}/api/accounts/nobody`), 404, /No event of account nobody/],
      [await fetch(`${running.url}/api/accounts/${'x'.repeat(65)}`), 400, /accountId/],
    ];
    for (const [res, status, detail] of cases) {
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(((await res.json()) as { detail: string }).detail).toMatch(detail);
    }
  });
});

describe('challenges: what the first version gets wrong', () => {
  it("challenge: two consumers apply each account's events in the order they were published", async () => {
    const sc = await scenario('order');
    // Five accounts over three partitions: a round-robin spreads each account's events over all three.
    const events = generateEvents(sc.accounts(5), 30);
    await using group = await projectors(sc, 2);
    await publish(sc, events, 25);
    const done = await until(async () => (await sc.stats()).distinctEvents === events.length, 20_000);
    await group.stop();
    const stats = await sc.stats();
    expect(done, `${stats.distinctEvents} of ${events.length} events applied within 20 s`).toBe(true);
    expect(
      stats.outOfOrder,
      `${stats.outOfOrder} events were applied after a later event of the same account (${events.length} events, 5 accounts, 3 partitions)`,
    ).toBe(0);
  }, 30_000);

  it('challenge: no event is lost when a worker process is SIGKILLed mid-batch and a fresh consumer takes over', async () => {
    const sc = await scenario('crash');
    const events = generateEvents(sc.accounts(12), 50);
    await publish(sc, events);
    await using worker = await startWorker({ databaseUrl: database.url, ...sc });

    // The crash lands at the worst moment this test can see: as soon as the group has committed offsets
    // past what the projection holds, or else a third of the way through. A pipeline that commits only
    // what it has written never shows the first, so it is killed in the middle of its work anyway.
    let atKill = { committed: 0, applied: 0 };
    const killed = await until(
      async () => {
        atKill = {
          committed: await committed(admin, sc.groupId, sc.topic),
          applied: (await sc.stats()).distinctEvents,
        };
        return atKill.committed - atKill.applied >= 5 || atKill.applied >= events.length / 3;
      },
      20_000,
      20,
    );
    await worker.kill('SIGKILL');
    expect(killed, `the worker applied ${atKill.applied} events in 20 s: ${worker.stderr()}`).toBe(true);

    // A fresh consumer in the same group resumes from the committed offsets, once the dead member's
    // session has timed out (6 s), and reads to the end of the topic.
    await using group = await projectors(sc, 1);
    const finished = await until(() => caughtUp(admin, sc.groupId, sc.topic), 30_000);
    await group.stop();
    const stats = await sc.stats();
    expect(finished, 'the fresh consumer reached the end of the topic within 30 s').toBe(true);
    const lost = events.length - stats.distinctEvents;
    expect(
      lost,
      `${lost} of ${events.length} events were never applied: killed with ${atKill.committed} offsets committed and ${atKill.applied} events written`,
    ).toBe(0);
  }, 60_000);

  it('challenge: events delivered again (the group lost its offsets and replays the topic) change no balance twice', async () => {
    const sc = await scenario('replay');
    const events = generateEvents(sc.accounts(4), 30);
    await publish(sc, events);
    {
      await using first = await projectors(sc, 1);
      const done = await until(async () => (await sc.stats()).distinctEvents === events.length, 20_000);
      expect(done, 'the first run applied every event within 20 s').toBe(true);
      await until(() => caughtUp(admin, sc.groupId, sc.topic), 10_000);
      await first.stop();
    }
    // Redelivery is how Kafka keeps "at least once": after a crash, after a rebalance that came before
    // a commit, or when a group loses its offsets (an idle group's expire after a week; an operator
    // deletes or rewinds it) and starts again from the beginning. Here the group's offsets are deleted.
    await admin.deleteGroups([sc.groupId]);
    await using second = await projectors(sc, 2);
    const finished = await until(() => caughtUp(admin, sc.groupId, sc.topic), 20_000);
    await second.stop();
    expect(finished, 'the group read the topic to the end again within 20 s').toBe(true);
    const stats = await sc.stats();
    expect(
      stats.duplicates,
      `${events.length} events were delivered twice and written ${stats.entries} times: ${stats.duplicates} balance changes too many`,
    ).toBe(0);
    expect(await sc.balances()).toEqual(expectedBalances(events));
  }, 60_000);

  it('challenge: a poison message blocks no other event and lands in the dead-letter topic with its reason', async () => {
    const sc = await scenario('poison');
    const accounts = sc.accounts(3);
    const events = generateEvents(accounts, 20);
    const half = events.length / 2;
    // A message no version can parse, in the middle of the stream, keyed like the first account's
    // events: under either partitioning, good events sit behind it on its partition.
    await publish(sc, events.slice(0, half));
    const poison = poisonValue(accounts[0]!);
    const raw = await kafka.producer();
    await raw.send({ topic: sc.topic, messages: [{ key: accounts[0]!, value: poison }] });
    await publish(sc, events.slice(half));

    const client = createKafka(kafka.brokers);
    const crashes = countCrashes(client);
    await using group = await projectors(sc, 1, client);
    // Until every good event is applied, or the consumer has given up on the poison once (kafkajs
    // then restarts it, and it reads the same message again, forever).
    await until(async () => (await sc.stats()).distinctEvents === events.length || crashes.count > 0, 20_000);
    const applied = (await sc.stats()).distinctEvents;
    await group.stop();
    expect(
      applied,
      `${applied} of ${events.length} good events applied; the rest wait behind the poison message${crashes.last ? ` (the consumer crashed on: ${crashes.last.slice(0, 90)})` : ''}`,
    ).toBe(events.length);

    // Sent before the events behind it were committed, so it is there by now.
    expect(await messagesIn(admin, sc.deadLetterTopic), 'messages in the dead-letter topic').toBe(1);
    const reason = (() => {
      try {
        parseEvent(Buffer.from(poison));
      } catch (error) {
        if (error instanceof InvalidEventError) return error.message;
      }
      throw new Error('the poison parsed');
    })();
    const deadLetter = await readOne(sc.deadLetterTopic, kafka.groupId('poison-dlt-reader'));
    expect(deadLetter.value, 'the dead letter keeps the original message').toBe(poison);
    expect(
      Object.values(deadLetter.headers).some((value) => value.includes(reason)),
      `a header of the dead letter says why it failed ("${reason.slice(0, 60)}..."); headers: ${JSON.stringify(deadLetter.headers)}`,
    ).toBe(true);
  }, 40_000);

  it('challenge: a worker stopped with SIGTERM leaves its group before it exits, so its partitions move at once', async () => {
    const sc = await scenario('sigterm');
    const events = generateEvents(sc.accounts(3), 30);
    await publish(sc, events);
    await using worker = await startWorker({ databaseUrl: database.url, ...sc });
    const working = await until(async () => (await sc.stats()).distinctEvents > 0, 15_000);
    expect(working, `the worker applied nothing within 15 s: ${worker.stderr()}`).toBe(true);
    expect(await members(admin, sc.groupId), 'members while the worker runs').toBe(1);

    await worker.kill('SIGTERM');
    // A member that left is gone now; one that just died stays listed until its session times out (6 s),
    // and until then nobody else may read its partitions.
    const left = await members(admin, sc.groupId);
    expect(left, `the group still lists ${left} member after the worker exited: it did not leave`).toBe(0);
  }, 40_000);
});

/** The first message of `topic`, read by a consumer of the fixture (a group of its own). */
async function readOne(topic: string, groupId: string): Promise<{ value: string; headers: Record<string, string> }> {
  const consumer = await kafka.consumer(groupId);
  await consumer.subscribe({ topic, fromBeginning: true });
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nothing arrived on ${topic} within 10 s`)), 10_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          clearTimeout(timer);
          const headers: Record<string, string> = {};
          for (const [name, value] of Object.entries(message.headers ?? {})) headers[name] = String(value);
          resolve({ value: message.value?.toString() ?? '', headers });
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
}
