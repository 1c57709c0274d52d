/**
 * Messages a consumer must survive. A queue or a topic is an API whose callers the consumer does not
 * control: an old producer, a producer with a bug, a person with a command-line client. A consumer that
 * crashes on one bad message crashes again on its redelivery (a poison message: the queue stops), and
 * one that neither acknowledges nor rejects it holds a prefetch slot for ever. So every spec that
 * consumes a queue or a stream also sends it garbage, and checks that the consumer is still alive
 * (the kit's *no process dies*) and has set the garbage aside: dead-lettered or skipped, never
 * requeued for ever, never blocking the good message behind it.
 *
 * These helpers publish the garbage over real connections (amqplib, kafkajs) and wait for the outcome:
 * a queue that holds a count (the dead-letter queue), a group whose committed offset has passed it.
 */
import amqp from 'amqplib';
import { type Kafka, Partitioners } from 'kafkajs';

/** One kind of garbage, with the name a failure message shows. */
export interface MalformedPayload {
  name: string;
  body: Buffer;
}

/** The garbage sent by default: each a way real producers get it wrong. */
export const MALFORMED_PAYLOADS: readonly MalformedPayload[] = [
  { name: 'an empty body', body: Buffer.alloc(0) },
  { name: 'text that is not JSON', body: Buffer.from('this is not JSON') },
  { name: 'JSON cut off halfway', body: Buffer.from('{"id": "42", "amount": ') },
  { name: 'bytes that are not UTF-8', body: Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xa0, 0xa1]) },
  { name: 'JSON of the wrong shape', body: Buffer.from('{"unexpected": [1, 2, 3]}') },
  { name: 'JSON null', body: Buffer.from('null') },
  { name: 'a JSON string instead of an object', body: Buffer.from('"42"') },
];

/** How many malformed messages this test file has sent (the kit checks that a consuming spec sends some). */
let sent = 0;

/** The number of malformed messages this test file has sent so far, with either helper. */
export function malformedMessagesSent(): number {
  return sent;
}

/** Where a RabbitMQ message goes: a queue (through the default exchange), or an exchange and routing key. */
export type RabbitDestination = { queue: string } | { exchange: string; routingKey: string };

/** Options for {@link publishMalformed}. */
export interface PublishMalformedOptions {
  /** The garbage to send (default: {@link MALFORMED_PAYLOADS}). */
  payloads?: readonly MalformedPayload[];
  /** AMQP properties for every message: a content type the consumer trusts, headers it reads. */
  properties?: amqp.Options.Publish;
}

/**
 * Publishes each malformed payload to `destination` on the RabbitMQ at `url` (persistent, with
 * publisher confirms: resolved once the broker has them all) and returns what it sent. Each message's
 * `messageId` is `malformed-<n>`, its `type` the payload's name.
 *
 * @example
 * await using rabbit = await useRabbitMQ();
 * const sent = await publishMalformed(rabbit.url, { queue: jobsQueue });
 * await untilQueueHolds(rabbit.url, deadLetters, sent.length); // set aside, every one
 * expect(await processedAfter(goodJob)).toBe(true);            // and the queue still flows
 * // useLab fails the test if the worker died on the way
 */
export async function publishMalformed(
  url: string,
  destination: RabbitDestination,
  options: PublishMalformedOptions = {},
): Promise<MalformedPayload[]> {
  const payloads = [...(options.payloads ?? MALFORMED_PAYLOADS)];
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    const [exchange, routingKey] =
      'queue' in destination ? ['', destination.queue] : [destination.exchange, destination.routingKey];
    for (const [i, p] of payloads.entries())
      channel.publish(exchange, routingKey, p.body, {
        persistent: true,
        contentType: 'application/json',
        messageId: `malformed-${i + 1}`,
        type: p.name,
        ...options.properties,
      });
    await channel.waitForConfirms();
    await channel.close();
  } finally {
    await connection.close();
  }
  sent += payloads.length;
  return payloads;
}

/** The ready messages `queue` holds now (not those delivered and unacknowledged). */
export async function queueDepth(url: string, queue: string): Promise<number> {
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createChannel();
    const { messageCount } = await channel.checkQueue(queue);
    await channel.close();
    return messageCount;
  } finally {
    await connection.close();
  }
}

/**
 * Resolves once `queue` holds at least `count` ready messages (a dead-letter queue receiving what was
 * set aside); rejects after `timeoutMs` (default 10 s) with what it held.
 */
export async function untilQueueHolds(url: string, queue: string, count: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const depth = await queueDepth(url, queue);
    if (depth >= count) return;
    if (Date.now() > deadline)
      throw new Error(`${queue} holds ${depth} message(s) after ${timeoutMs} ms; expected at least ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Where one produced Kafka message landed. */
export interface ProducedAt {
  name: string;
  partition: number;
  offset: string;
}

/** Options for {@link produceMalformed}. */
export interface ProduceMalformedOptions {
  /** The garbage to send as values (default: {@link MALFORMED_PAYLOADS}); a null value is sent too. */
  payloads?: readonly MalformedPayload[];
  /** The key of every message (default: none); a consumer that routes by key meets its garbage here. */
  key?: string | Buffer | null;
  /** A partition to write to (default: the producer's choice). */
  partition?: number;
}

/**
 * Produces each malformed payload to `topic`, then one message whose value is null (a tombstone, which
 * compacted topics carry and naive consumers dereference), all acknowledged by every in-sync replica,
 * and returns where each landed.
 *
 * @example
 * await using kafka = await useKafka();
 * const at = await produceMalformed(kafka.kafka, topic);
 * await untilGroupCommitted(kafka.kafka, groupId, topic, at); // skipped or dead-lettered, not stuck
 * // useLab fails the test if the consumer's process died on the way
 */
export async function produceMalformed(
  kafka: Kafka,
  topic: string,
  options: ProduceMalformedOptions = {},
): Promise<ProducedAt[]> {
  const payloads = [...(options.payloads ?? MALFORMED_PAYLOADS)];
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    const messages = [
      ...payloads.map((p) => ({ name: p.name, value: p.body as Buffer | null })),
      { name: 'a null value (a tombstone)', value: null },
    ];
    const landed: ProducedAt[] = [];
    // One at a time: each message's offset is then known exactly, whatever partition it went to.
    for (const m of messages) {
      const [meta] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: options.key ?? null, value: m.value, partition: options.partition }],
      });
      landed.push({ name: m.name, partition: meta!.partition, offset: meta!.baseOffset ?? '-1' });
    }
    sent += messages.length;
    return landed;
  } finally {
    await producer.disconnect();
  }
}

/**
 * Resolves once consumer group `groupId` has committed, on each partition in `produced`, an offset past
 * the last message produced there (the consumer skipped or dead-lettered them and moved on); rejects
 * after `timeoutMs` (default 15 s) naming the partitions still behind.
 */
export async function untilGroupCommitted(
  kafka: Kafka,
  groupId: string,
  topic: string,
  produced: readonly ProducedAt[],
  timeoutMs = 15_000,
): Promise<void> {
  const needed = new Map<number, bigint>();
  for (const p of produced) {
    const next = BigInt(p.offset) + 1n;
    if (next > (needed.get(p.partition) ?? 0n)) needed.set(p.partition, next);
  }
  const admin = kafka.admin();
  await admin.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      const at = new Map(committed?.partitions.map((p) => [p.partition, BigInt(p.offset)]) ?? []);
      const behind = [...needed].filter(([partition, next]) => (at.get(partition) ?? -1n) < next);
      if (behind.length === 0) return;
      if (Date.now() > deadline)
        throw new Error(
          `group ${groupId} has not committed past the malformed messages on ${topic} after ${timeoutMs} ms: ` +
            behind.map(([p, next]) => `partition ${p} at ${at.get(p) ?? 'none'}, needs ${next}`).join('; '),
        );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await admin.disconnect();
  }
}
