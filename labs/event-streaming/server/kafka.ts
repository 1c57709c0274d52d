/**
 * The lab's Kafka plumbing: one way to make a client, the consumer group settings every projector
 * shares, and topics created with the partitions the lab needs. What it reads of topics and groups
 * (messages, committed offsets, lag) is @labs/services', said once for every Kafka lab.
 */
import type { Admin, ConsumerConfig, Kafka, KafkaConfig } from 'kafkajs';
import { createKafkaClient, ensureTopics as ensureKafkaTopics, lag } from '@labs/services';

export { committed, lag, messagesIn } from '@labs/services';

/** Partitions of the events topic: enough for three consumers to share, few enough to read in a test. */
export const PARTITIONS = 3;

/** The lab's kafkajs client (@labs/services': quiet, retrying from 100 ms); `overrides` is for a spec. */
export function createKafka(
  brokers: string | readonly string[],
  clientId = 'event-streaming-lab',
  overrides: Omit<KafkaConfig, 'brokers' | 'clientId'> = {},
): Kafka {
  return createKafkaClient(brokers, { clientId, ...overrides });
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

/** Creates `topics` (PARTITIONS each, unless told) if they do not exist yet, and waits for their leaders. */
export const ensureTopics = (admin: Admin, topics: readonly string[], partitions = PARTITIONS) =>
  ensureKafkaTopics(admin, topics, partitions);

/** True when the group has committed every message of `topic`: nothing is left for it to read. */
export async function caughtUp(admin: Admin, groupId: string, topic: string): Promise<boolean> {
  return (await lag(admin, groupId, topic)) === 0;
}
