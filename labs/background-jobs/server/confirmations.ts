/**
 * The side effect of a job: "send the order confirmation". Rendering it takes a few milliseconds (a
 * template, a mail provider's API); sending it is recorded as one row in `confirmations`, which is
 * what the spec and the load script count. A job confirmed twice is two rows: the duplicate a
 * customer would see as two emails.
 *
 * The sender also keeps the numbers a test cannot get from the broker: how many confirmations were in
 * progress at once in this process, and when each job was tried.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { boundedPool } from '@labs/lab-kit';
import { ORDER_REQUESTS_TABLE } from './idempotency.ts';
import type { ConfirmationJob, SendConfirmation } from './jobs.ts';

/**
 * The pool of the API and of every worker (the one `lab serve` runs beside it, and worker-process.ts).
 * Every statement here is a one-row lookup, a count over this run's jobs or a one-row insert, so
 * seconds already mean the database is in trouble. The API answers a wait cut short with a 503
 * (server/app.ts); the worker gives the job back to the queue (the solution), so a job is never acked
 * without its effect.
 */
export const DATABASE_POOL_OPTIONS = boundedPool({ statementMs: 2000, answerMs: 2500, connectMs: 2000 });

/** The products a confirmation can name. An order for anything else is a poison job (see below). */
export const CATALOGUE: Readonly<Record<string, string>> = {
  mug: 'Enamel mug',
  poster: 'Map poster',
  notebook: 'Dot-grid notebook',
  tshirt: 'Logo T-shirt',
};

/**
 * The tables. `confirmations` has no unique constraint on purpose: it stands for an email provider,
 * which sends whatever it is asked to send. `processed_jobs` is there for the worker to remember which
 * jobs it has done (the starter never writes to it).
 */
export async function migrate(db: pg.Pool): Promise<void> {
  await db.query(`
    CREATE TABLE IF NOT EXISTS confirmations (
      id          bigserial PRIMARY KEY,
      job_id      uuid NOT NULL,
      order_id    uuid NOT NULL,
      email       text NOT NULL,
      body        text NOT NULL,
      enqueued_at timestamptz NOT NULL,
      sent_at     timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX IF NOT EXISTS confirmations_job_id ON confirmations (job_id);
    CREATE TABLE IF NOT EXISTS processed_jobs (
      job_id       uuid PRIMARY KEY,
      processed_at timestamptz NOT NULL DEFAULT now()
    );
    ${ORDER_REQUESTS_TABLE}`);
}

/** The text of the confirmation; throws for a product that is not (or no longer) in the catalogue. */
export function renderConfirmation(job: ConfirmationJob): string {
  const lines = job.items.map((item) => {
    const name = CATALOGUE[item.sku];
    // The classic poison message: data the handler cannot process, however often it is retried.
    if (name === undefined) throw new Error(`no product "${item.sku}" in the catalogue`);
    return `${item.quantity} x ${name}`;
  });
  return `Thank you for your order ${job.orderId}:\n${lines.join('\n')}`;
}

/** How the sender behaves. */
export interface SenderOptions {
  /** Time each confirmation takes before it is recorded (waiting on a provider, not CPU). */
  workMs: number;
  /**
   * After this many calls, every further call hangs inside its transaction (after the claim, before
   * the effect) until `releaseHeld()`: a worker stuck mid-batch, to be killed, or holding open
   * transactions while a test breaks their connections. Only the fault tests and the load script set it.
   */
  hangAfter?: number;
  /**
   * With `hangAfter`: every second held call hangs after its confirmation is written instead of before,
   * so a worker is stuck both ways, before its effect and between its effect and its commit. What the
   * worker does after either (an ack, a COMMIT) then meets whatever the test broke meanwhile.
   */
  hangAfterEffectToo?: boolean;
  /**
   * The first call for each of these jobs hangs inside its transaction (after the claim, before the
   * effect) until `releaseHeld()`, whatever `hangAfter` says: chosen jobs kept in progress while the
   * test does something around them (gives another job back, cuts the broker connection). A later
   * delivery of the same job is not held; it meets the first one's claim instead. Only the spec sets it.
   */
  holdJobs?: ReadonlySet<string>;
  /**
   * Each call waits (up to this many ms) until another call for the same job id is in progress too:
   * two copies of a job delivered at once are then both inside the work together, the interleaving a
   * check-then-act dedupe gets wrong, forced instead of hoped for. A worker that lets only one copy
   * through (a claim in the database) has the other copy waiting on this call's transaction instead:
   * that ends the wait as well (they are inside the work together, one behind the other's lock).
   * Only the spec sets it.
   */
  meetCopiesMs?: number;
  /** With `meetCopiesMs`: only these jobs wait for a copy (every job when absent). */
  meetCopiesOf?: ReadonlySet<string>;
  /**
   * Each job's first call fails after its confirmation is written: a provider that did the work and
   * then timed out. Whatever the call wrote must go with the failed attempt. Only the spec sets it.
   */
  failAfterFirstEffect?: boolean;
}

type Queryable = Parameters<SendConfirmation>[0];

/**
 * Resolves once another session waits on a lock that `db`'s transaction holds (checked every 20 ms),
 * or never: when `db` is a pool rather than one connection, or once `signal` aborts. The check is a
 * read of pg_stat_activity on the caller's own connection, so it takes no lock and changes nothing.
 */
async function waitedOn(db: Queryable, signal: AbortSignal): Promise<void> {
  const pid = (db as { processID?: unknown }).processID;
  if (typeof pid !== 'number') return new Promise<void>(() => {});
  while (!signal.aborted) {
    const { rows } = await db.query<{ waited: boolean }>(
      'SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))) AS waited',
      [pid],
    );
    if (rows[0]?.waited) return;
    await sleep(20, undefined, { signal }).catch(() => undefined);
  }
  return new Promise<void>(() => {});
}

/** What one process's sender has seen. */
export type SenderStats = ReturnType<typeof createConfirmationSender>['stats'];

/** Makes a sender: the effect every worker in the lab is given as `deps.sendConfirmation`. */
export function createConfirmationSender(options: SenderOptions) {
  // Calls in total (failed ones too), calls that threw, calls in progress, the most in progress at once.
  const stats = { calls: 0, failures: 0, inFlight: 0, maxInFlight: 0 };
  const attempts = new Map<string, number[]>();
  const { promise: held, resolve: releaseHeld } = Promise.withResolvers<void>();
  /** Calls waiting for a copy of their job, by job id. */
  const waitingForCopy = new Map<string, () => void>();
  const meetCopy = async (db: Queryable, jobId: string, ms: number) => {
    const waiting = waitingForCopy.get(jobId);
    waitingForCopy.delete(jobId);
    if (waiting) return waiting(); // the copy that came first goes on, and so does this one
    const met = Promise.withResolvers<void>();
    waitingForCopy.set(jobId, met.resolve);
    const stop = new AbortController();
    await Promise.race([met.promise, sleep(ms, undefined, { ref: false }), waitedOn(db, stop.signal)]);
    stop.abort();
    if (waitingForCopy.get(jobId) === met.resolve) waitingForCopy.delete(jobId); // no copy came
  };
  const send: SendConfirmation = async (db, job) => {
    stats.calls++;
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    attempts.set(job.jobId, [...(attempts.get(job.jobId) ?? []), performance.now()]);
    try {
      const heldNo = options.hangAfter === undefined ? 0 : stats.calls - options.hangAfter;
      const holdAfterEffect = heldNo > 0 && options.hangAfterEffectToo === true && heldNo % 2 === 0;
      const chosen = options.holdJobs?.has(job.jobId) === true && attempts.get(job.jobId)?.length === 1;
      if ((heldNo > 0 && !holdAfterEffect) || chosen) await held;
      if (options.meetCopiesMs !== undefined && (options.meetCopiesOf?.has(job.jobId) ?? true)) {
        await meetCopy(db, job.jobId, options.meetCopiesMs);
      }
      if (options.workMs > 0) await sleep(options.workMs);
      const body = renderConfirmation(job);
      await db.query(
        'INSERT INTO confirmations (job_id, order_id, email, body, enqueued_at) VALUES ($1, $2, $3, $4, $5)',
        [job.jobId, job.orderId, job.email, body, job.enqueuedAt],
      );
      if (holdAfterEffect) await held;
      if (options.failAfterFirstEffect && attempts.get(job.jobId)?.length === 1) {
        throw new Error('the mail provider timed out after accepting the confirmation');
      }
    } catch (error) {
      stats.failures++;
      throw error;
    } finally {
      stats.inFlight--;
    }
  };
  return {
    send,
    stats,
    /** performance.now() of each attempt of `jobId`, oldest first. */
    attemptsOf: (jobId: string) => attempts.get(jobId) ?? [],
    /** Lets the calls held by `hangAfter` go on (and every later one). */
    releaseHeld: () => releaseHeld(),
  };
}

/** Confirmations per job id, for the given jobs (0 for a job never confirmed). */
export async function confirmationsPerJob(db: pg.Pool, jobIds: readonly string[]): Promise<Map<string, number>> {
  const counts = new Map(jobIds.map((id) => [id, 0]));
  const { rows } = await db.query<{ job_id: string; n: number }>(
    'SELECT job_id, count(*)::int AS n FROM confirmations WHERE job_id = ANY($1::uuid[]) GROUP BY job_id',
    [jobIds],
  );
  for (const row of rows) counts.set(row.job_id, row.n);
  return counts;
}
