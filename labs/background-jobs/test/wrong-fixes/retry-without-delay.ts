/**
 * WRONG FIX: counts attempts in a header, re-publishes a failed job to the work queue at once, and
 * dead-letters it with its reason after the last attempt.
 *
 * The poison job now ends in the dead-letter queue, but its retries come back within milliseconds. A
 * failure that is about to go away by itself (a provider's outage, a lock, a deploy) has no time to
 * go away, and a thousand failing jobs retry as a thousand-strong storm against whatever is already
 * struggling. Retries need delays, growing ones: one delay queue per step, with a queue TTL that
 * dead-letters back to the work exchange.
 *
 * @catches a poison job reaches the dead-letter queue after 4 attempts, with growing delays, and every other job is done
 */
import amqp, { type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import {
  DEAD_LETTER_HEADERS,
  decodeJob,
  encodeJob,
  JOB_ROUTING_KEY,
  type JobPublisher,
  type JobQueueNames,
  type JobWorker,
  type QueueSettings,
  type WorkerDeps,
} from '../../server/jobs.ts';

async function declareQueues(channel: ConfirmChannel, names: JobQueueNames): Promise<void> {
  await channel.assertExchange(names.exchange, 'direct', { durable: true });
  await channel.assertQueue(names.queue, { durable: true });
  await channel.bindQueue(names.queue, names.exchange, JOB_ROUTING_KEY);
  await channel.assertQueue(names.deadQueue, { durable: true });
}

export async function createPublisher(settings: QueueSettings): Promise<JobPublisher> {
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`publisher connection: ${error.message}`));
  const channel = await connection.createConfirmChannel();
  await declareQueues(channel, settings.names);
  return {
    async publish(job) {
      channel.publish(settings.names.exchange, JOB_ROUTING_KEY, encodeJob(job), {
        persistent: true,
        messageId: job.jobId,
      });
      await channel.waitForConfirms();
    },
    async close() {
      await connection.close().catch(() => undefined);
    },
  };
}

export async function startWorker(settings: QueueSettings, deps: WorkerDeps): Promise<JobWorker> {
  const { names } = settings;
  const attempts = settings.retryDelaysMs.length + 1;
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createConfirmChannel();
  await declareQueues(channel, names);
  await channel.prefetch(settings.prefetch);
  const handle = async (message: ConsumeMessage) => {
    const attempt = Number(message.properties.headers?.['x-attempt'] ?? 1);
    try {
      await deps.sendConfirmation(deps.db, decodeJob(message.content));
    } catch (error) {
      const reason = (error as Error).message;
      const options = { persistent: true, messageId: message.properties.messageId };
      if (attempt < attempts) {
        channel.publish(names.exchange, JOB_ROUTING_KEY, message.content, {
          ...options,
          headers: { 'x-attempt': attempt + 1 },
        });
      } else {
        channel.sendToQueue(names.deadQueue, message.content, {
          ...options,
          headers: { [DEAD_LETTER_HEADERS.error]: reason, [DEAD_LETTER_HEADERS.attempts]: attempt },
        });
      }
      await channel.waitForConfirms();
    }
    channel.ack(message);
  };
  await channel.consume(names.queue, (message) => {
    if (message) handle(message).catch((error: Error) => settings.log(`job failed: ${error.message}`));
  });
  return {
    async stop() {
      await connection.close().catch(() => undefined);
    },
  };
}
