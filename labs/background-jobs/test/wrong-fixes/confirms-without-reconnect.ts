/**
 * WRONG FIX: the publisher uses a confirm channel and waits for the broker's confirm before the API
 * answers 202, so no job it accepted is lost. But it never reconnects.
 *
 * After the first dropped connection (a broker restart, a load balancer's idle timeout, a network
 * blip) the channel is closed for good, and every order after it is answered 503 until someone
 * restarts the API. Confirms make a publish safe; reconnecting (and declaring the topology again)
 * makes the publisher last.
 *
 * @catches jobs accepted while the broker connection drops are never lost, and publishing resumes
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
  const channel = await connection.createConfirmChannel();
  await declareQueue(channel, settings.names);
  return {
    publish(job) {
      return new Promise<void>((resolve, reject) => {
        try {
          channel.publish(
            settings.names.exchange,
            JOB_ROUTING_KEY,
            encodeJob(job),
            { persistent: true, messageId: job.jobId },
            (error) => (error ? reject(new Error(String(error))) : resolve()),
          );
        } catch (error) {
          reject(error);
        }
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
