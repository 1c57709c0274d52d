/**
 * WRONG FIX: a prefetch is set, but the worker still acks each job the moment it arrives.
 *
 * The prefetch counts unacknowledged deliveries. A job acked on receipt no longer counts, so the broker
 * sends the next one at once, and the next: the prefetch limits nothing, and every job in the worker's
 * memory is one the broker has already forgotten. Kill the worker and they are gone.
 *
 * @catches a worker never has more jobs in flight than its prefetch
 * @catches a worker killed mid-batch loses no jobs
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
  const connection = await amqp.connect(settings.url);
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
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  await channel.prefetch(settings.prefetch);
  await channel.consume(settings.names.queue, async (message) => {
    if (!message) return;
    channel.ack(message);
    try {
      await deps.sendConfirmation(deps.db, decodeJob(message.content));
    } catch (error) {
      settings.log(`job failed: ${(error as Error).message}`);
    }
  });
  return {
    async stop() {
      await connection.close().catch(() => undefined);
    },
  };
}
