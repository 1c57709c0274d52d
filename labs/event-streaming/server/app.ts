/**
 * The HTTP side of the lab: record account events (they are published to Kafka) and read the balances
 * the projectors keep. createApp never listens; `server/lab.ts` builds it for `lab serve` and the spec.
 */
import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import type pg from 'pg';
import { notFound, parseInput, problemHandler, sendProblem, z } from '@labs/lab-kit';
import { ACCOUNT_ID, type AccountEvent, MAX_AMOUNT } from './events.ts';
import { outagesAs503, warnEvery5s, withinDeadline } from './outages.ts';
import type { Publisher } from './pipeline.ts';
import { getAccount, nextSeq, projectionStats } from './projection.ts';

export interface AppDeps {
  pool: pg.Pool;
  publisher: Publisher;
  /** Publishes a message that is not an event, keyed like `accountId`'s events (to try the dead letters). */
  publishPoison(accountId: string): Promise<void>;
  /** How many messages the dead-letter topic holds. */
  deadLettered(): Promise<number>;
  /** Messages of the topic the projectors' group has not committed yet (its lag). */
  pending(): Promise<number>;
  /** Called when a request fails because a service is down or stalled (the answer is a 503). */
  onOutage?: (error: Error) => void;
}

const accountId = z.string().regex(ACCOUNT_ID, 'must be 1-64 letters, digits, - or _');
const newEvent = z.object({
  accountId,
  type: z.enum(['deposited', 'withdrawn']),
  amount: z.number().int().min(1).max(MAX_AMOUNT),
});
const accountPath = z.object({ accountId });

/**
 * Faults (server/outages.ts): the pool's timeouts bound every query, and each call to Kafka below is
 * given up on after a deadline, so a service that is down or stalled costs a request a few seconds at
 * most and is answered 503 with Retry-After. Reading a balance needs only PostgreSQL: it keeps working
 * while Kafka is away (the balances then stop moving, since nothing new is applied).
 */
export function createApp(deps: AppDeps): Express {
  const { pool, publisher, onOutage = warnEvery5s() } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));

  /** Records one event: numbered after the account's last one, published, answered 202 (applied later). */
  app.post('/api/events', async (req, res) => {
    const input = parseInput(res, newEvent, req.body);
    if (!input) return;
    // Numbering, then publishing, is two steps: a crash in between leaves a gap in the account's
    // numbers. Making them one is the transactional outbox, another lab's subject.
    const event: AccountEvent = {
      id: randomUUID(),
      ...input,
      seq: await nextSeq(pool, input.accountId),
      at: new Date().toISOString(),
    };
    await withinDeadline(publisher.publish([event]), 'publishing the event');
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
    const [stats, deadLettered, pending] = await Promise.all([
      projectionStats(pool),
      withinDeadline(deps.deadLettered(), 'counting the dead letters'),
      withinDeadline(deps.pending(), "reading the group's lag"),
    ]);
    res.json({ ...stats, deadLettered, pending });
  });

  app.post('/api/poison', async (req, res) => {
    const input = parseInput(res, z.object({ accountId }), req.body ?? {});
    if (!input) return;
    await withinDeadline(deps.publishPoison(input.accountId), 'publishing the poison message');
    res.status(202).json({ published: 'a message that is not an event', key: input.accountId });
  });

  app.use(notFound);
  app.use(outagesAs503(onOutage));
  app.use(problemHandler((error) => console.error(`[event-streaming] ${error.message}`)));
  return app;
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
