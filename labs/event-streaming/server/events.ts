/**
 * The events on the topic: money moving in and out of accounts. Each event carries its own id (what
 * "the same event" means when it arrives twice) and a sequence number per account (what "in order"
 * means): the service that owns the account numbers its events 1, 2, 3, ... as it records them.
 */
import { randomUUID } from 'node:crypto';
import { describeIssues, z } from '@labs/lab-kit';

/** One change to one account's balance, as published to Kafka (JSON in the message value). */
export const eventSchema = z.object({
  /** Unique per event (a UUID): the same id twice is the same event delivered twice. */
  id: z.uuid(),
  /** Also what the API accepts in a path. */
  accountId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, - or _'),
  /** 1, 2, 3, ... per account, in the order the account's owner recorded them. */
  seq: z.number().int().min(1),
  type: z.enum(['deposited', 'withdrawn']),
  /** In cents, always positive (`type` says which way it moves the balance), ten million at most, so a sum never overflows. */
  amount: z.number().int().min(1).max(1_000_000_000),
  /** When the event happened (ISO 8601): the start of the end-to-end lag the load script measures. */
  at: z.iso.datetime({ offset: true }),
});
export type AccountEvent = z.infer<typeof eventSchema>;

/**
 * A message that can never become an event: not JSON, or JSON of the wrong shape. Reading it again
 * gives the same error, so retrying it is pointless: it is a "poison message".
 */
export class InvalidEventError extends Error {
  override readonly name = 'InvalidEventError';
}

/** Reads a Kafka message value as an event; throws an {@link InvalidEventError} saying why it is not one. */
export function parseEvent(value: Buffer | null): AccountEvent {
  if (value === null) throw new InvalidEventError('the message has no value');
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    throw new InvalidEventError(`the value is not valid JSON: ${JSON.stringify(value.toString('utf8').slice(0, 40))}`);
  }
  const result = eventSchema.safeParse(json);
  if (!result.success) throw new InvalidEventError(`not an account event: ${describeIssues(result.error).join('; ')}`);
  return result.data;
}

/** How an event changes its account's balance, in cents. */
export const signedAmount = (event: AccountEvent): number =>
  event.type === 'deposited' ? event.amount : -event.amount;

/**
 * An endless stream of events for `accounts`, taken `count` at a time, interleaved the way several
 * accounts' activity arrives (a1 #1, a2 #1, ..., a1 #2, ...), each account's numbered 1, 2, 3, ...
 * Amounts are fixed by position, so a test knows every balance; every fourth event is a withdrawal.
 */
export function eventStream(accounts: readonly string[]): (count: number) => AccountEvent[] {
  let next = 0;
  return (count) => {
    const events: AccountEvent[] = [];
    for (const end = next + count; next < end; next++) {
      const i = next % accounts.length;
      const seq = Math.floor(next / accounts.length) + 1;
      const withdrawal = seq % 4 === 0;
      events.push({
        id: randomUUID(),
        accountId: accounts[i]!,
        seq,
        type: withdrawal ? 'withdrawn' : 'deposited',
        amount: withdrawal ? 100 + i : 1000 + (seq % 1000),
        at: new Date().toISOString(),
      });
    }
    return events;
  };
}

/** `perAccount` events for each of `accounts`, from the start of an {@link eventStream}. */
export const generateEvents = (accounts: readonly string[], perAccount: number): AccountEvent[] =>
  eventStream(accounts)(accounts.length * perAccount);

/** The balance each account should end with once every event in `events` is applied exactly once. */
export function expectedBalances(events: readonly AccountEvent[]): Map<string, number> {
  const balances = new Map<string, number>();
  for (const event of events) balances.set(event.accountId, (balances.get(event.accountId) ?? 0) + signedAmount(event));
  return balances;
}
