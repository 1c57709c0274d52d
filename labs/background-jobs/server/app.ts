/**
 * The API: it accepts an order, queues "send the confirmation" as a job and answers 202 at once; the
 * work happens later, in a worker. createApp never listens; server/lab.ts builds it for `lab serve`,
 * the spec and the load script. Errors are RFC 9457 problems.
 */
import express, { type Express } from 'express';
import type pg from 'pg';
import { notFound, parseInput, problemHandler, sendProblem, ServiceDownError, z } from '@labs/lab-kit';
import { type JobPublisher, newJob, orderInput } from './jobs.ts';

export interface AppDeps {
  publisher: JobPublisher;
  db: pg.Pool;
  log?: (message: string) => void;
}

const jobIdParam = z.object({ jobId: z.uuid() });

export function createApp(deps: AppDeps): Express {
  const { publisher, db, log = (message) => console.error(`[background-jobs] ${message}`) } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));

  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });

  app.post('/orders', async (req, res, next) => {
    if (!req.is('application/json')) {
      sendProblem(res, 415, 'Send the order as JSON (Content-Type: application/json)');
      return;
    }
    const order = parseInput(res, orderInput, req.body);
    if (!order) return;
    // The order itself is not stored here: the job carries it. A real API would write the order and
    // the job in one transaction (the transactional outbox), so neither exists without the other.
    const job = newJob(order);
    try {
      await publisher.publish(job);
    } catch (error) {
      log(`could not queue job ${job.jobId}: ${(error as Error).message}`);
      // 503, not 500: the client may try again. Not 202: nothing was promised.
      next(new ServiceDownError('The job queue is unavailable; nothing was queued. Try again shortly.', 1));
      return;
    }
    res.status(202).location(`/jobs/${job.jobId}`).json({ jobId: job.jobId, orderId: job.orderId, status: 'queued' });
  });

  // What a client polls: how many confirmations the job has produced (0: not yet, 2 or more: a duplicate).
  app.get('/jobs/:jobId', async (req, res, next) => {
    const params = parseInput(res, jobIdParam, req.params);
    if (!params) return;
    try {
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
    } catch (error) {
      next(error);
    }
  });

  app.get('/stats', async (_req, res, next) => {
    try {
      const { rows } = await db.query<{ confirmations: number; jobs: number }>(
        'SELECT count(*)::int AS confirmations, count(DISTINCT job_id)::int AS jobs FROM confirmations',
      );
      const { confirmations = 0, jobs = 0 } = rows[0] ?? {};
      res.json({ confirmations, jobsConfirmed: jobs, duplicates: confirmations - jobs });
    } catch (error) {
      next(error);
    }
  });

  app.use(notFound);
  app.use(problemHandler((error) => log(error.message)));
  return app;
}
