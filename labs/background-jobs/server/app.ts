/**
 * The API: it accepts an order, queues "send the confirmation" as a job and answers 202 at once; the
 * work happens later, in a worker (server/lab.ts builds it).
 *
 * Under faults (see the README's "Under faults"): when the broker does not confirm a job in time, or
 * the database is down or stalled past the pool's timeouts (DATABASE_POOL_OPTIONS), the answer is a 503 with
 * Retry-After, which a client can act on; anything else that fails is a bug, a logged 500. A 503 says
 * what is known: an unconfirmed publish may still have reached the queue, so it says "not known", and
 * POST /orders takes an Idempotency-Key (server/idempotency.ts) so that the retry it invites is safe.
 */
import type { Express } from 'express';
import type pg from 'pg';
import { labApp, parseInput, sendProblem, ServiceDownError, z } from '@labs/lab-kit';
import { isPostgresOutage } from '@labs/services';
import { IDEMPOTENCY_KEY, jobForKey } from './idempotency.ts';
import { type JobPublisher, newJob, orderInput } from './jobs.ts';

/** What a client is told to wait before it tries again, in seconds, when the broker or the database is away. */
export const RETRY_AFTER_SEC = 2;

const jobIdParam = z.object({ jobId: z.uuid() });

type AppDeps = { publisher: JobPublisher; db: pg.Pool; log: (line: string) => void };

/** The API around the learner's publisher; `log` gets the outages (a line every 5 s at most) and the bugs. */
export function createApp({ publisher, db, log }: AppDeps): Express {
  const outages = [{ test: isPostgresOutage, service: 'The database', retryAfterSec: RETRY_AFTER_SEC }];
  const problems = { outages, log: (error: Error) => log(error.message), logOutage: log };
  return labApp({ name: 'background-jobs', json: { limit: '16kb' }, ...problems }, (app) => {
    app.post('/orders', async (req, res) => {
      if (!req.is('application/json')) {
        sendProblem(res, 415, 'Send the order as JSON (Content-Type: application/json)');
        return;
      }
      const key = req.get('idempotency-key');
      if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
        sendProblem(res, 400, 'Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, say)');
        return;
      }
      const order = parseInput(res, orderInput, req.body);
      if (!order) return;
      // The order itself is not stored here: the job carries it. A real API would write the order and
      // the job in one transaction (the transactional outbox), so neither exists without the other.
      // With a key, a retry gets the job of the first attempt (its key is a row in PostgreSQL, so such a
      // request needs the database: down, it is a 503 before anything is queued).
      const job = key === undefined ? newJob(order) : await jobForKey(db, key, order);
      if (job === 'another order') {
        sendProblem(res, 422, 'This Idempotency-Key was sent with another order; use a new key for a new order');
        return;
      }
      // Bounded by the publisher: the solution gives up after JOB_PUBLISH_TIMEOUT_MS (reconnects
      // included), so a broker that is down or silent costs a request that long, never longer.
      await publisher.publish(job).catch((error: unknown) => {
        // 503, not 500: the client may try again. Not "nothing was queued": a publish that was not
        // confirmed may still have reached the queue (a slow broker confirms late, or never), so the
        // answer says it is not known, and how to retry without ordering twice.
        const retry =
          key === undefined
            ? 'Sending the order again may confirm it twice: send it with an Idempotency-Key header to retry safely.'
            : 'Retry with the same Idempotency-Key: the order is then done once.';
        throw new ServiceDownError(
          `The job queue did not confirm the order in time: it may or may not have been queued. ${retry}`,
          RETRY_AFTER_SEC,
          { cause: error, extra: { jobId: job.jobId, queued: 'unknown' } },
        );
      });
      res.status(202).location(`/jobs/${job.jobId}`).json({ jobId: job.jobId, orderId: job.orderId, status: 'queued' });
    });

    // What a client polls: how many confirmations the job has produced (0: not yet, 2 or more: a duplicate).
    // (A failed query goes on to problemHandler: the database's outage is a 503, anything else a 500.)
    app.get('/jobs/:jobId', async (req, res) => {
      const params = parseInput(res, jobIdParam, req.params);
      if (!params) return;
      const { rows } = await db.query<{ n: number; first: Date | null }>(
        'SELECT count(*)::int AS n, min(sent_at) AS first FROM confirmations WHERE job_id = $1',
        [params.jobId],
      );
      const { n, first } = rows[0] ?? { n: 0, first: null };
      res.json({
        jobId: params.jobId,
        status: n > 0 ? 'done' : 'not done (yet)',
        confirmations: n,
        ...(first ? { sentAt: first.toISOString() } : {}),
      });
    });

    app.get('/stats', async (_req, res) => {
      const { rows } = await db.query<{ confirmations: number; jobs: number }>(
        'SELECT count(*)::int AS confirmations, count(DISTINCT job_id)::int AS jobs FROM confirmations',
      );
      const { confirmations = 0, jobs = 0 } = rows[0] ?? {};
      res.json({ confirmations, jobsConfirmed: jobs, duplicates: confirmations - jobs });
    });
  });
}
