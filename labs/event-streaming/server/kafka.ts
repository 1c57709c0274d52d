/**
 * The lab's Kafka plumbing: one way to make a client, the consumer group settings every projector
 * shares, and topics created with the partitions the lab needs.
 */
import { type Admin, type ConsumerConfig, Kafka, type KafkaConfig, logLevel } from 'kafkajs';

/** Partitions of the events topic: enough for three consumers to share, few enough to read in a test. */
export const PARTITIONS = 3;

/**
 * A kafkajs client. Quiet unless KAFKAJS_LOG_LEVEL says otherwise (kafkajs reads it itself): it logs
 * the broker's retriable answers (a coordinator still loading) as errors, although it retries them.
 * Retries start at 100 ms instead of 300 ms, so a consumer that keeps failing gives up and restarts in
 * about a second rather than ten. `overrides` is for a spec (a socket factory that goes through a proxy).
 */
export function createKafka(
  brokers: readonly string[],
  clientId = 'event-streaming-lab',
  overrides: Omit<KafkaConfig, 'brokers' | 'clientId'> = {},
): Kafka {
  return new Kafka({
    clientId,
    brokers: [...brokers],
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 100, retries: 5 },
    ...overrides,
  });
}

/** The broker list in KAFKA_BROKERS form ("host:port,host:port"), as kafkajs takes it. */
export const brokerList = (url: string): string[] => url.split(',').map((b) => b.trim());

/**
 * The consumer settings the lab gives every projector, beside its group id.
 *
 * - sessionTimeout 6 s, the broker's minimum (group.min.session.timeout.ms): a member that stops
 *   heartbeating (a crashed process) is removed, and its partitions handed on, after 6 s, not 30.
 * - heartbeatInterval 500 ms: how often, at most, kafkajs tells the coordinator the member is alive,
 *   and so how soon a member learns that the group is rebalancing.
 * - maxWaitTimeInMs 200: how long a fetch waits for new messages; disconnecting waits for the fetch in
 *   flight, so this also bounds how long a clean stop takes.
 */
export function consumerSettings(groupId: string): ConsumerConfig {
  return { groupId, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 200 };
}

/** How long a new topic's partitions may take to get their leaders before ensureTopics gives up. */
const LEADERS_WITHIN_MS = 30_000;

/**
 * Creates `topics` with `partitions` each, if they do not exist yet, and waits for their leaders. On a
 * busy machine a broker can take longer to elect them than kafkajs' own wait (a few retries, about 3 s,
 * then "This server does not host this topic-partition"), so the wait is this function's, and longer.
 */
export async function ensureTopics(admin: Admin, topics: readonly string[], partitions = PARTITIONS): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((topic) => !existing.has(topic));
  if (missing.length === 0) return;
  try {
    await admin.createTopics({
      topics: missing.map((topic) => ({ topic, numPartitions: partitions })),
      waitForLeaders: true,
    });
  } catch (error) {
    if ((error as { type?: string }).type !== 'UNKNOWN_TOPIC_OR_PARTITION') throw error;
  }
  const deadline = Date.now() + LEADERS_WITHIN_MS;
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics: missing });
      if (found.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (error) {
      if ((error as { type?: string }).type !== 'UNKNOWN_TOPIC_OR_PARTITION' || Date.now() > deadline) throw error;
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
 * least that commit. Read the other way round, a projector that commits in between makes a partition
 * look committed past its end, and the lag came out negative (`"pending": -2` under load).
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

/** True when the group has committed every message of `topic`: nothing is left for it to read. */
export async function caughtUp(admin: Admin, groupId: string, topic: string): Promise<boolean> {
  return (await lag(admin, groupId, topic)) === 0;
}

/**
 * Logs, for every consumer made from `kafka` from now on, when it joins its group (with the partitions
 * it got) and when it crashes: what `lab serve` shows, so a rebalance or a poison message can be seen.
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
