/**
 * The broker as seen from outside the learner's code (the RabbitMQ admin of @labs/services), in this
 * lab's terms: jobs published for a test or a load run (confirmed, so the caller knows they are in the
 * queue), and a run's queues deleted.
 */
import { openRabbitAdmin } from '@labs/services';
import { type ConfirmationJob, encodeJob, JOB_ROUTING_KEY, type JobQueueNames } from './jobs.ts';

const asMessage = (job: ConfirmationJob) => ({ content: encodeJob(job), properties: { messageId: job.jobId } });

/** Connects to `url` for admin work: `queueState(queue)`, `publishJobs`, `deleteJobQueue`, `close()`. */
export async function openBrokerAdmin(url: string) {
  const admin = await openRabbitAdmin(url);
  return {
    ...admin,
    /** Publishes `jobs` to the work exchange, in order, mandatory, and waits for the broker's confirms. */
    publishJobs: (names: JobQueueNames, jobs: readonly ConfirmationJob[]) =>
      admin.publish(names.exchange, JOB_ROUTING_KEY, jobs.map(asMessage)),
    /** Deletes every queue and the exchange of `names`; missing ones are skipped. */
    deleteJobQueue: (names: JobQueueNames) =>
      admin.deleteAll([names.queue, ...names.retryQueues, names.deadQueue], [names.exchange]),
  };
}
