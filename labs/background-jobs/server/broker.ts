/**
 * The broker as seen from outside the learner's code: how deep a queue is, jobs published for a test or
 * a load run (confirmed, so the caller knows they are in the queue), and a run's queues deleted. Each operation gets a channel of its own, because AMQP closes a channel on
 * its first error (asking about a queue that does not exist is one).
 */
import { once } from 'node:events';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import { type ConfirmationJob, encodeJob, JOB_ROUTING_KEY, type JobQueueNames } from './jobs.ts';

/** A queue as the broker sees it. `messages` counts ready messages only, not those held unacked. */
export interface QueueState {
  messages: number;
  consumers: number;
}

/** A connection for looking at queues. */
export interface BrokerAdmin extends AsyncDisposable {
  /** The queue's state, or undefined when it does not exist. */
  queueState(queue: string): Promise<QueueState | undefined>;
  /**
   * Publishes `jobs` to the work exchange in order and waits for the broker's confirms, pausing on
   * back-pressure. Mandatory: a job no queue is bound for is an error, not a silent drop.
   */
  publishJobs(names: JobQueueNames, jobs: readonly ConfirmationJob[]): Promise<void>;
  /** Deletes every queue and the exchange of `names`; missing ones are skipped. */
  deleteJobQueue(names: JobQueueNames): Promise<void>;
  close(): Promise<void>;
}

/** Connects to `url` for admin work. */
export async function openBrokerAdmin(url: string): Promise<BrokerAdmin> {
  const connection: ChannelModel = await amqp.connect(url);
  connection.on('error', () => {}); // 'close' follows; every operation below reports its own failure
  const withChannel = async <T>(work: (channel: Channel) => Promise<T>): Promise<T> => {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      return await work(channel);
    } finally {
      await channel.close().catch(() => undefined);
    }
  };
  const close = () => connection.close().catch(() => undefined);
  return {
    async queueState(queue) {
      try {
        const { messageCount, consumerCount } = await withChannel((channel) => channel.checkQueue(queue));
        return { messages: messageCount, consumers: consumerCount };
      } catch {
        return undefined;
      }
    },
    async publishJobs(names, jobs) {
      const channel = await connection.createConfirmChannel();
      channel.on('error', () => {});
      let returned = 0;
      channel.on('return', () => returned++);
      try {
        for (const job of jobs) {
          const written = channel.publish(names.exchange, JOB_ROUTING_KEY, encodeJob(job), {
            persistent: true,
            mandatory: true,
            messageId: job.jobId,
            contentType: 'application/json',
          });
          if (!written) await once(channel, 'drain');
        }
        await channel.waitForConfirms();
      } finally {
        await channel.close().catch(() => undefined);
      }
      if (returned > 0) throw new Error(`${returned} job(s) were not routed to any queue: is the queue declared?`);
    },
    async deleteJobQueue(names) {
      for (const queue of [names.queue, ...names.retryQueues, names.deadQueue]) {
        await withChannel((channel) => channel.deleteQueue(queue)).catch(() => undefined);
      }
      await withChannel((channel) => channel.deleteExchange(names.exchange)).catch(() => undefined);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
