/**
 * WRONG FIX: acks after the work, and remembers done job ids in a Set to skip duplicates.
 *
 * The Set lives in one process. A job redelivered after that process died goes to another worker
 * (or to this one, restarted) whose Set is empty, and is sent again. And two copies of one job
 * delivered at the same time both pass the check before either is added. What is done must be
 * remembered where every worker looks, atomically with the effect: the database, in one transaction.
 *
 * @catches a redelivered or duplicated job causes no duplicate confirmation
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
  const done = new Set<string>();
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  await channel.prefetch(settings.prefetch);
  await channel.consume(settings.names.queue, async (message) => {
    if (!message) return;
    try {
      const job = decodeJob(message.content);
      if (!done.has(job.jobId)) {
        await deps.sendConfirmation(deps.db, job);
        done.add(job.jobId);
      }
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
