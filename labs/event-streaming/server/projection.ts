/**
 * The read model the events feed: one balance per account in PostgreSQL, and one entry per applied
 * event (the account's statement). Applying an event is one SQL statement, so it is atomic on its own;
 * whether an event is applied once, and in which order, is up to the consumer that calls it.
 *
 * The tables also keep the evidence the spec and the load script count: entries per event id (applied
 * twice?), an out-of-order counter per account (applied after a later event of the same account?), and
 * where each entry came from in Kafka (for how long a partition paused).
 */
import type pg from 'pg';
import { type ProviderName, requireServer } from '@labs/services';
import { type AccountEvent, signedAmount } from './events.ts';

/** A pool or a client checked out of one (a transaction): anything that runs a query. */
export type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

/** Where in Kafka a message was read from. */
export interface EventSource {
  topic: string;
  partition: number;
  /** The message's offset, as kafkajs gives it (a decimal string). */
  offset: string;
}

/** Refuses the embedded PostgreSQL (PGlite, one session): this lab runs consumers in several processes. */
export const requirePostgresServer = (provider: ProviderName): void =>
  requireServer(
    { kind: 'postgres', provider },
    'The event-streaming lab needs a PostgreSQL server: its consumers run in several processes, each with transactions of its own.',
  );

/** Creates the lab's tables if they are missing. Run once per database, before any projector starts. */
export async function migrate(db: Queryable): Promise<void> {
  await db.query(`
    CREATE TABLE IF NOT EXISTS accounts (
      account_id     text PRIMARY KEY,
      balance        bigint  NOT NULL,
      last_seq       integer NOT NULL,
      events_applied integer NOT NULL,
      out_of_order   integer NOT NULL
    );
    CREATE TABLE IF NOT EXISTS account_entries (
      id               bigserial PRIMARY KEY,
      event_id         uuid        NOT NULL,
      account_id       text        NOT NULL,
      seq              integer     NOT NULL,
      amount           bigint      NOT NULL,
      source_partition integer     NOT NULL,
      source_offset    bigint      NOT NULL,
      happened_at      timestamptz NOT NULL,
      applied_at       timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX IF NOT EXISTS account_entries_by_account ON account_entries (account_id);
    -- For consumers that remember which events they have already applied (one row per event id).
    CREATE TABLE IF NOT EXISTS processed_events (
      event_id     uuid PRIMARY KEY,
      processed_at timestamptz NOT NULL DEFAULT now()
    );
    -- The write side's numbering: the API gives each account's events 1, 2, 3, ...
    CREATE TABLE IF NOT EXISTS account_sequences (
      account_id text PRIMARY KEY,
      last_seq   integer NOT NULL
    );
    -- For a recorder that writes each event beside its number and publishes it afterwards (a
    -- transactional outbox): position is the order to publish in; a row stays once published, so an
    -- idempotency key still finds its event (a real system deletes rows older than a key's lifetime).
    CREATE TABLE IF NOT EXISTS event_outbox (
      position        bigserial   PRIMARY KEY,
      account_id      text        NOT NULL,
      idempotency_key text,
      event           jsonb       NOT NULL,
      recorded_at     timestamptz NOT NULL DEFAULT now(),
      published_at    timestamptz,
      UNIQUE (account_id, idempotency_key)
    );
    CREATE INDEX IF NOT EXISTS event_outbox_unpublished ON event_outbox (position) WHERE published_at IS NULL;
  `);
}

/**
 * Applies one event to its account: adds an entry and moves the balance, in one statement. It is not
 * idempotent: applying the same event twice moves the balance twice. An event whose `seq` is lower than
 * one already applied to the account is applied anyway and counted in `out_of_order`.
 */
export async function applyEvent(db: Queryable, event: AccountEvent, source: EventSource): Promise<void> {
  await db.query(
    `WITH entry AS (
       INSERT INTO account_entries (event_id, account_id, seq, amount, source_partition, source_offset, happened_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
     )
     INSERT INTO accounts AS a (account_id, balance, last_seq, events_applied, out_of_order)
     VALUES ($2, $4, $3, 1, 0)
     ON CONFLICT (account_id) DO UPDATE SET
       balance        = a.balance + EXCLUDED.balance,
       last_seq       = GREATEST(a.last_seq, EXCLUDED.last_seq),
       events_applied = a.events_applied + 1,
       out_of_order   = a.out_of_order + (EXCLUDED.last_seq < a.last_seq)::int`,
    [event.id, event.accountId, event.seq, signedAmount(event), source.partition, source.offset, event.at],
  );
}

/** One account as the API shows it. */
export interface Account {
  accountId: string;
  /** In cents. */
  balance: number;
  lastSeq: number;
  eventsApplied: number;
  outOfOrder: number;
}

const ACCOUNT_COLUMNS = `account_id AS "accountId", balance::float8 AS balance, last_seq AS "lastSeq",
  events_applied AS "eventsApplied", out_of_order AS "outOfOrder"`;

/** The account, or undefined when no event of it has been applied yet. */
export async function getAccount(db: Queryable, accountId: string): Promise<Account | undefined> {
  const { rows } = await db.query<Account>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1`, [
    accountId,
  ]);
  return rows[0];
}

/** Every account whose id starts with `prefix`, by id. */
export async function listAccounts(db: Queryable, prefix = ''): Promise<Account[]> {
  const { rows } = await db.query<Account>(
    `SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE starts_with(account_id, $1) ORDER BY account_id`,
    [prefix],
  );
  return rows;
}

/** What the projection holds for accounts starting with `prefix`: the figures the spec counts. */
export interface ProjectionStats {
  /** Entries written: one per application of an event, duplicates included. */
  entries: number;
  /** Different events applied at least once. */
  distinctEvents: number;
  /** entries - distinctEvents: applications beyond the first. */
  duplicates: number;
  /** Applications of an event after a later event of the same account. */
  outOfOrder: number;
}

export async function projectionStats(db: Queryable, prefix = ''): Promise<ProjectionStats> {
  const { rows } = await db.query<{ entries: number; distinct_events: number; out_of_order: number }>(
    `SELECT (SELECT count(*)::int FROM account_entries WHERE starts_with(account_id, $1)) AS entries,
            (SELECT count(DISTINCT event_id)::int FROM account_entries WHERE starts_with(account_id, $1)) AS distinct_events,
            (SELECT coalesce(sum(out_of_order), 0)::int FROM accounts WHERE starts_with(account_id, $1)) AS out_of_order`,
    [prefix],
  );
  const row = rows[0]!;
  return {
    entries: row.entries,
    distinctEvents: row.distinct_events,
    duplicates: row.entries - row.distinct_events,
    outOfOrder: row.out_of_order,
  };
}

/**
 * The next sequence number of `accountId` (1 for its first event), allocated atomically. Inside a
 * transaction it also locks the account's row until COMMIT or ROLLBACK: a second caller for the same
 * account waits there, and a ROLLBACK gives the number back.
 */
export async function nextSeq(db: Queryable, accountId: string): Promise<number> {
  const { rows } = await db.query<{ last_seq: number }>(
    `INSERT INTO account_sequences AS s (account_id, last_seq) VALUES ($1, 1)
     ON CONFLICT (account_id) DO UPDATE SET last_seq = s.last_seq + 1
     RETURNING last_seq`,
    [accountId],
  );
  return rows[0]!.last_seq;
}
