/**
 * Background jobs over RabbitMQ. The API publishes "send the order confirmation" jobs and answers 202 at
 * once; a worker consumes them and does the work later. This is the version most of us write first,
 * straight from a tutorial: it works on a quiet afternoon. The day a worker dies mid-batch, a job keeps
 * failing or the network blinks, it loses jobs, sends confirmations twice or loops for ever.
 *
 * Your job: make every job happen exactly once in effect, whatever crashes. The spec (`pnpm lab
 * background-jobs`) counts what goes wrong; the contract (job shape, queue names, the headers a dead
 * letter carries) is in server/jobs.ts, the tables in server/confirmations.ts.
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
} from '../server/jobs.ts';

/** Declares the exchange and the work queue, bound together. Safe to repeat. */
async function declareQueue(channel: Channel, names: JobQueueNames): Promise<void> {
  await channel.assertExchange(names.exchange, 'direct', { durable: true });
  await channel.assertQueue(names.queue, { durable: true });
  await channel.bindQueue(names.queue, names.exchange, JOB_ROUTING_KEY);
}

/** The API's side: puts jobs on the queue. */
export async function createPublisher(settings: QueueSettings): Promise<JobPublisher> {
  // TODO(lab): nothing reconnects. Once this connection drops, every publish fails until a restart.
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`publisher connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  return {
    async publish(job) {
      // TODO(lab): publish() hands the bytes to the socket and returns: the broker may never get them,
      // and the API answers 202 all the same. (Its result, false when the buffer is full, is ignored too.)
      channel.publish(settings.names.exchange, JOB_ROUTING_KEY, encodeJob(job), {
        persistent: true,
        contentType: 'application/json',
        messageId: job.jobId,
      });
    },
    async close() {
      await connection.close().catch(() => undefined);
    },
  };
}

/** Does one job: sends the order's confirmation. */
async function handleJob(job: ConfirmationJob, deps: WorkerDeps): Promise<void> {
  // TODO(lab): a job delivered twice (redelivered after a crash, published twice by a retry) is sent twice.
  await deps.sendConfirmation(deps.db, job);
}

/** The background's side: consumes jobs and does them. */
export async function startWorker(settings: QueueSettings, deps: WorkerDeps): Promise<JobWorker> {
  // TODO(lab): nothing reconnects here either. After a dropped connection this worker idles for ever.
  const connection = await amqp.connect(settings.url);
  connection.on('error', (error) => settings.log(`worker connection: ${error.message}`));
  const channel = await connection.createChannel();
  await declareQueue(channel, settings.names);
  // TODO(lab): no prefetch, so the broker pushes every ready job to this one worker at once.
  await channel.consume(settings.names.queue, async (message) => {
    if (!message) return;
    // TODO(lab): acknowledged on receipt: the broker forgets the job before it is done. If this
    // process dies now, the job is gone.
    channel.ack(message);
    try {
      await handleJob(decodeJob(message.content), deps);
    } catch (error) {
      settings.log(`job failed, trying again: ${(error as Error).message}`);
      // TODO(lab): tried again at once, and for ever. A job that can never succeed loops without end.
      channel.publish(settings.names.exchange, JOB_ROUTING_KEY, message.content, {
        persistent: true,
        contentType: 'application/json',
        messageId: message.properties.messageId,
      });
    }
  });
  return {
    async stop() {
      // TODO(lab): closes at once, whatever jobs are in progress.
      await connection.close().catch(() => undefined);
    },
  };
}
