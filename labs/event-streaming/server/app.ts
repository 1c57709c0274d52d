/** The HTTP side: record account events (published to Kafka), read the balances the projectors keep. */
import type { Express } from 'express';
import type pg from 'pg';
import { labApp, parseInput, ServiceDownError, sendProblem, z } from '@labs/lab-kit';
import { eventSchema } from './events.ts';
import { OUTAGES, RETRY_AFTER_SEC, withinDeadline } from './outages.ts';
import type { Recorder } from './pipeline.ts';
import { getAccount, projectionStats } from './projection.ts';

export interface AppDeps {
  pool: pg.Pool;
  /** Numbers and publishes new events: the learner's (createRecorder). */
  recorder: Recorder;
  /** Publishes a message that is not an event, keyed like `accountId`'s events (to try the dead letters). */
  publishPoison(accountId: string): Promise<void>;
  /** How many messages the dead-letter topic holds. */
  deadLettered(): Promise<number>;
  /** Messages of the topic the projectors' group has not committed yet (its lag). */
  pending(): Promise<number>;
  /** Messages the topic holds. */
  published(): Promise<number>;
  /** Where an outage behind a 503 is reported, a line every 5 s at most (default: the kit's warning). */
  onOutage?: (line: string) => void;
}

const newEvent = eventSchema.pick({ accountId: true, type: true, amount: true });
const accountPath = z.object({ accountId: eventSchema.shape.accountId });
/**
 * A client's name for one request, so that sending it again is recognised (RFC draft
 * "The Idempotency-Key HTTP Header Field"): printable ASCII, as a UUID or an order number is.
 */
const idempotencyKey = z
  .string()
  .regex(/^[\x21-\x7E]{1,128}$/, 'must be 1-128 printable ASCII characters without spaces')
  .optional();

/** What a 503 on recording an event means: it may have been recorded all the same. */
const MAYBE_RECORDED =
  'the event may or may not have been recorded. Send the same request again with the same ' +
  'Idempotency-Key header once it answers, and it is recorded once.';

/**
 * Faults (server/outages.ts): the pool's timeouts bound every query, and each call to Kafka below is
 * given up on after a deadline, so a service that is down or stalled costs a request a few seconds at
 * most and is answered 503 with Retry-After, naming the service whose client failed. Reading a balance
 * needs only PostgreSQL: it keeps working while Kafka is away (the balances then stop moving, since
 * nothing new is applied).
 */
export function createApp(deps: AppDeps): Express {
  const { pool, recorder } = deps;
  const frame = { name: 'event-streaming', json: { limit: '16kb' }, outages: OUTAGES, logOutage: deps.onOutage };
  return labApp(frame, (app) => {
    /**
     * Records one event: numbered after the account's last one and published (by the recorder), answered
     * 202 (applied later). With an Idempotency-Key the account has used before, the answer is the event
     * recorded then; the same key with a different event is a client's mistake (422).
     */
    app.post('/api/events', async (req, res) => {
      const input = parseInput(res, newEvent, req.body);
      if (!input) return;
      const headers = parseInput(res, z.object({ 'idempotency-key': idempotencyKey }), req.headers);
      if (!headers) return;
      const key = headers['idempotency-key'];
      const event = await recorder.record(input, key).catch((error: unknown) => {
        // A write given up on is not undone: the 503 says what is known, and how to retry safely.
        const outage = OUTAGES.find((candidate) => candidate.test(error));
        if (!outage) throw error;
        throw new ServiceDownError(`${outage.service} is not answering: ${MAYBE_RECORDED}`, RETRY_AFTER_SEC, {
          cause: error,
        });
      });
      if (event.type !== input.type || event.amount !== input.amount) {
        const was = `${event.type} ${event.amount}`;
        sendProblem(
          res,
          422,
          `Idempotency-Key ${key} was used for another event of account ${input.accountId} (${was})`,
        );
        return;
      }
      res.status(202).json({ event });
    });

    app.get('/api/accounts/:accountId', async (req, res) => {
      const path = parseInput(res, accountPath, req.params);
      if (!path) return;
      const account = await getAccount(pool, path.accountId);
      if (!account) {
        sendProblem(res, 404, `No event of account ${path.accountId} has been applied yet`);
        return;
      }
      res.json(account);
    });

    /** What the projection holds: duplicates and out-of-order applications are the bugs made visible. */
    app.get('/api/stats', async (_req, res) => {
      const [stats, deadLettered, pending, published] = await Promise.all([
        projectionStats(pool),
        withinDeadline(deps.deadLettered(), 'counting the dead letters'),
        withinDeadline(deps.pending(), "reading the group's lag"),
        withinDeadline(deps.published(), 'counting the messages'),
      ]);
      res.json({ ...stats, deadLettered, pending, published });
    });

    app.post('/api/poison', async (req, res) => {
      const input = parseInput(res, accountPath, req.body ?? {});
      if (!input) return;
      await withinDeadline(deps.publishPoison(input.accountId), 'publishing the poison message');
      res.status(202).json({ published: 'a message that is not an event', key: input.accountId });
    });
  });
}

/**
 * The value of a poison message for `accountId`: an event in every field but one, as a producer with a
 * bug writes it (the amount formatted for people). No consumer can ever apply it.
 */
export function poisonValue(accountId: string): string {
  return JSON.stringify({
    id: '00000000-0000-4000-8000-000000000000',
    accountId,
    seq: 1,
    type: 'deposited',
    amount: '12.50 EUR',
    at: '2024-01-01T00:00:00.000Z',
  });
}
