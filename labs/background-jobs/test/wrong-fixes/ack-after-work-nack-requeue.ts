/**
 * WRONG FIX: the textbook worker. Acks after the work, with a prefetch, and on any error hands the job
 * back with nack(requeue=true).
 *
 * Crashes no longer lose jobs, but a job that can never succeed (a product deleted from the catalogue)
 * goes straight back to the head of the queue and is tried again at once, for ever: RabbitMQ 3.x
 * classic queues have no delivery limit (quorum queues in 4.x stop at 20 deliveries, then drop or
 * dead-letter it, still with no delay between tries and no reason kept). It also sends a confirmation
 * twice when a job is redelivered.
 *
 * @catches a poison job reaches the dead-letter queue after 4 attempts, with growing delays, and every other job is done
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
    try {
      await deps.sendConfirmation(deps.db, decodeJob(message.content));
      channel.ack(message);
    } catch (error) {
      settings.log(`job failed, requeued: ${(error as Error).message}`);
      channel.nack(message, false, true);
    }
  });
  return {
    async stop() {
      await connection.close().catch(() => undefined);
    },
  };
}
