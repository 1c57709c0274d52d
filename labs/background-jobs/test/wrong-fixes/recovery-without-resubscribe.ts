/**
 * WRONG FIX: turns on amqplib 2's connection recovery (`recovery: true`) and sets the channel up
 * once, after connecting, the way the code looked before.
 *
 * Recovery brings back the connection, and only the connection. The channel made on the old one is
 * closed, its prefetch and its consumer went with it, and nothing consumes again: the worker looks
 * healthy (connected) and does nothing. Channels, topology, prefetch and consumers belong in the
 * `setup` function, which runs after every (re)connect.
 *
 * @catches a worker whose connection drops reconnects and does the jobs published afterwards
 */
import amqp, { type Channel } from 'amqplib';
import {
  decodeJob,
  encodeJob,
  JOB_ROUTING_KEY,
  type JobPublisher,
  type JobQueueNames,
  type JobWorker,
  type QueueSettings,
  type WorkerDeps,
} from '../../server/jobs.ts';

async function declareQueue(channel: Channel, names: JobQueueNames): Promise<void> {
  await channel.assertExchange(names.exchange, 'direct', { durable: true });
  await channel.assertQueue(names.queue, { durable: true });
  await channel.bindQueue(names.queue, names.exchange, JOB_ROUTING_KEY);
}

export async function createPublisher(settings: QueueSettings): Promise<JobPublisher> {
  const connection = await amqp.connect(settings.url, { recovery: true });
  connection.on('error', (error) => settings.log(`publisher connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  return {
    async publish(job) {
      channel.publish(settings.names.exchange, JOB_ROUTING_KEY, encodeJob(job), {
        persistent: true,
        messageId: job.jobId,
      });
    },
    async close() {
      await connection.close().catch(() => undefined);
    },
  };
}

export async function startWorker(settings: QueueSettings, deps: WorkerDeps): Promise<JobWorker> {
  const connection = await amqp.connect(settings.url, { recovery: true });
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  await channel.prefetch(settings.prefetch);
  await channel.consume(settings.names.queue, async (message) => {
    if (!message) return;
    try {
      await deps.sendConfirmation(deps.db, decodeJob(message.content));
      channel.ack(message);
    } catch (error) {
      settings.log(`job failed: ${(error as Error).message}`);
      channel.nack(message, false, false);
    }
  });
  return {
    async stop() {
      await connection.close().catch(() => undefined);
    },
  };
}
