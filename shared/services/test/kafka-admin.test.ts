/**
 * Kafka against a real broker: a client made from a KAFKA_BROKERS string, and the admin reads (topics
 * made with their leaders, messages counted, a group's committed offsets and lag as it commits).
 */
import { randomBytes } from 'node:crypto';
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  committed,
  createKafkaClient,
  ensureTopics,
  lag,
  logConsumerEvents,
  messagesIn,
  resolveService,
  stopServices,
} from '../src/index.ts';

const { url } = await resolveService('kafka', { log: null });
const kafka = createKafkaClient(url, { clientId: 'kafka-admin-test' }); // the KAFKA_BROKERS form: "host:port,..."

const admin = kafka.admin();
await admin.connect();
const topic = `labs-kafka-admin-${randomBytes(4).toString('hex')}`;
const groupId = `${topic}-group`;

afterAll(async () => {
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.deleteGroups([groupId]).catch(() => undefined);
  await admin.disconnect();
  await stopServices();
});

describe('Kafka admin reads', () => {
  it('makes a topic once with its partitions led, counts its messages, and follows a group to lag 0', async () => {
    expect(await messagesIn(admin, topic), 'a topic that does not exist holds nothing').toBe(0);
    await ensureTopics(admin, [topic], 3);
    await ensureTopics(admin, [topic], 3); // already there: nothing to do
    const [metadata] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
    expect(metadata?.partitions.map((p) => p.leader >= 0)).toEqual([true, true, true]);

    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: 6 }, (_, i) => ({ key: `k${i}`, value: `${i}` })) });
    await producer.disconnect();
    expect(await messagesIn(admin, topic)).toBe(6);
    expect(await committed(admin, groupId, topic), 'a group that never committed').toBe(0);
    expect(await lag(admin, groupId, topic), 'a group that never committed lags by every message').toBe(6);

    // Commit part of the way by hand, then the rest: the lag follows.
    const offsets = await admin.fetchTopicOffsets(topic);
    const withMessages = offsets.filter((p) => Number(p.high) > 0);
    const [first, ...rest] = withMessages;
    await admin.setOffsets({ groupId, topic, partitions: [{ partition: first!.partition, offset: first!.high }] });
    expect(await committed(admin, groupId, topic)).toBe(Number(first!.high));
    expect(await lag(admin, groupId, topic)).toBe(6 - Number(first!.high));
    await admin.setOffsets({
      groupId,
      topic,
      partitions: rest.map((p) => ({ partition: p.partition, offset: p.high })),
    });
    expect(await lag(admin, groupId, topic)).toBe(0);
  });

  it("logs a consumer's joining its group, with the partitions it got", async () => {
    const lines: string[] = [];
    logConsumerEvents(kafka, (line) => lines.push(line));
    const consumer = kafka.consumer({ groupId: `${groupId}-logged`, sessionTimeout: 6000, heartbeatInterval: 500 });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
      await consumer.run({ eachMessage: async () => {} });
      await joined;
      expect(lines).toEqual([`[group] a consumer joined ${groupId}-logged: partitions 0, 1, 2`]);
    } finally {
      await consumer.disconnect();
      await admin.deleteGroups([`${groupId}-logged`]).catch(() => undefined);
    }
  });
});
