/**
 * WRONG FIX: acks after the work, and uses the processed_jobs table: SELECT first, send if the job
 * is not there, INSERT its id afterwards.
 *
 * Survives a redelivery to another worker, because the id is in the database. But the check and the
 * record are separate statements with the work in between: two deliveries of the same job at the same
 * time (a publisher that retried) both find nothing and both send. The claim must come first and be
 * atomic (INSERT ... ON CONFLICT DO NOTHING), in the same transaction as the effect.
 *
 * @catches a redelivered or duplicated job causes no duplicate confirmation
 */
import amqp, { type Channel } from 'amqplib';
import {
  type ConfirmationJob,
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

async function handleJob(job: ConfirmationJob, deps: WorkerDeps): Promise<void> {
  const seen = await deps.db.query('SELECT 1 FROM processed_jobs WHERE job_id = $1', [job.jobId]);
  if (seen.rowCount) return;
  await deps.sendConfirmation(deps.db, job);
  await deps.db.query('INSERT INTO processed_jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING', [job.jobId]);
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
      await handleJob(decodeJob(message.content), deps);
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
