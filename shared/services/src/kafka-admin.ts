/**
 * What a Kafka lab asks its cluster from outside its consumers, through a kafkajs admin client: topics
 * made and ready, how many messages a topic holds, and how far a consumer group has got (its lag); and
 * what its consumers' groups do, for a log.
 */
import type { Admin, Kafka } from 'kafkajs';

/** How long a new topic's partitions may take to get their leaders before ensureTopics gives up. */
const LEADERS_WITHIN_MS = 30_000;

const unknownTopic = (error: unknown) => (error as { type?: string }).type === 'UNKNOWN_TOPIC_OR_PARTITION';

/**
 * Creates `topics` with `partitions` each, if they do not exist yet, and waits for their leaders. On a
 * busy machine a broker can take longer to elect them than kafkajs' own wait (a few retries, about 3 s,
 * then "This server does not host this topic-partition"), so the wait is this function's, and longer.
 */
export async function ensureTopics(admin: Admin, topics: readonly string[], partitions: number): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((topic) => !existing.has(topic));
  if (missing.length === 0) return;
  await admin
    .createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: partitions })), waitForLeaders: true })
    .catch((error: unknown) => {
      if (!unknownTopic(error)) throw error;
    });
  const deadline = Date.now() + LEADERS_WITHIN_MS;
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics: missing });
      if (found.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (error) {
      if (!unknownTopic(error) || Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error(`Kafka gave ${missing.join(', ')} no leaders within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Messages in `topic` so far: the sum of its partitions' end offsets (0 when it does not exist). */
export async function messagesIn(admin: Admin, topic: string): Promise<number> {
  if (!(await admin.listTopics()).includes(topic)) return 0;
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
}

/** The group's committed offsets on `topic`, summed over its partitions (a partition with none counts 0). */
export async function committed(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return (offsets?.partitions ?? []).reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
}

/**
 * The group's lag on `topic`: messages it has not committed yet, summed over the partitions; never
 * negative. The two reads are not one snapshot, so their order matters: the committed offsets first,
 * then the ends. An end only grows and a commit never passes it, so an end read after a commit is at
 * least that commit. Read the other way round, a consumer that commits in between makes a partition
 * look committed past its end, and the lag comes out negative.
 */
export async function lag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const ends = await admin.fetchTopicOffsets(topic);
  const done = new Map((offsets?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  // A partition with no commit yet (-1) is read from its first message still kept (`low`).
  return ends.reduce(
    (sum, p) => sum + Math.max(0, Number(p.high) - Math.max(Number(p.low), done.get(p.partition) ?? -1)),
    0,
  );
}

/**
 * Logs, for every consumer made from `kafka` from now on, when it joins its group (with the partitions
 * it got) and when it crashes: what a Kafka lab's `lab serve` shows, so that a rebalance or a poison
 * message can be seen as it happens.
 */
export function logConsumerEvents(kafka: Kafka, log: (line: string) => void): void {
  const original = kafka.consumer.bind(kafka);
  kafka.consumer = (config) => {
    const consumer = original(config);
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      const partitions = Object.values(payload.memberAssignment).flat().sort();
      log(`[group] a consumer joined ${payload.groupId}: partitions ${partitions.join(', ') || 'none'}`);
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      log(`[group] a consumer crashed${payload.restart ? ' (kafkajs restarts it)' : ''}: ${payload.error.message}`);
    });
    return consumer;
  };
}
