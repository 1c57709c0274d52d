/**
 * WRONG FIX: retries through delay queues, and after the last attempt rejects the job
 * (nack, requeue=false) so the broker's own dead-lettering moves it to the dead-letter queue.
 *
 * The job gets there, but its story does not: the broker records that it was rejected (x-death) and
 * nothing about why. Whoever opens the dead-letter queue at 3 a.m. sees a job and no error. Publish
 * it to the dead-letter queue yourself, with the error and the attempt count in headers, then ack.
 *
 * @catches a poison job reaches the dead-letter queue after 4 attempts, with growing delays, and every other job is done
 */
import amqp, { type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import {
  decodeJob,
  encodeJob,
  JOB_ROUTING_KEY,
  type JobPublisher,
  type JobWorker,
  type QueueSettings,
  type WorkerDeps,
} from '../../server/jobs.ts';

async function declareQueues(channel: ConfirmChannel, settings: QueueSettings): Promise<void> {
  const { names, retryDelaysMs } = settings;
  await channel.assertExchange(names.exchange, 'direct', { durable: true });
  await channel.assertQueue(names.deadQueue, { durable: true });
  await channel.assertQueue(names.queue, {
    durable: true,
    deadLetterExchange: '',
    deadLetterRoutingKey: names.deadQueue,
  });
  await channel.bindQueue(names.queue, names.exchange, JOB_ROUTING_KEY);
  for (const [step, delay] of retryDelaysMs.entries()) {
    await channel.assertQueue(names.retryQueues[step]!, {
      durable: true,
      messageTtl: delay,
      deadLetterExchange: names.exchange,
      deadLetterRoutingKey: JOB_ROUTING_KEY,
    });
  }
}

export async function createPublisher(settings: QueueSettings): Promise<JobPublisher> {
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`publisher connection: ${error.message}`));
  const channel = await connection.createConfirmChannel();
  await declareQueues(channel, settings);
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
  const { names, retryDelaysMs } = settings;
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createConfirmChannel();
  await declareQueues(channel, settings);
  await channel.prefetch(settings.prefetch);
  const handle = async (message: ConsumeMessage) => {
    const attempt = Number(message.properties.headers?.['x-attempt'] ?? 1);
    try {
      await deps.sendConfirmation(deps.db, decodeJob(message.content));
      channel.ack(message);
    } catch {
      if (attempt > retryDelaysMs.length) {
        channel.nack(message, false, false);
        return;
      }
      channel.sendToQueue(names.retryQueues[attempt - 1]!, message.content, {
        persistent: true,
        messageId: message.properties.messageId,
        headers: { 'x-attempt': attempt + 1 },
      });
      await channel.waitForConfirms();
      channel.ack(message);
    }
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
