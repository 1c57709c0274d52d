/**
 * What a user is, on the wire and in the database, and how a request's input is checked (zod schemas,
 * read by the kit's parseInput). Shared by every version of the cache; the learner does not edit this file.
 *
 * The JSON shape of a user depends on the *schema version* the app was deployed with. Version 1 is
 * { id, name, email, version }; version 2 (the current release) adds `updatedAt`. A deployment that
 * bumps the version is exactly the moment a cache that ignores it serves yesterday's shape.
 */
import { z } from '@labs/lab-kit';

/** The schema version this release of the code writes and expects. */
export const CURRENT_SCHEMA_VERSION = 2;

/** A row of the `users` table. `version` goes up by one on every write. */
export type UserRow = { id: number; name: string; email: string; version: number; updated_at: Date };

/** A user as schema version 1 presented it. `version`: 1 when created, +1 per write. */
export type UserV1 = { id: number; name: string; email: string; version: number };

/** A user as schema version 2 (current) presents it. */
export interface UserV2 extends UserV1 {
  /** ISO 8601 time of the last write. */
  updatedAt: string;
}

/** A user in the shape of some schema version: what the API returns and what a cache stores. */
export type User = UserV1 | UserV2;

/** Turns a row into the JSON shape of `schemaVersion`. */
export function presentUser(row: UserRow, schemaVersion: number): User {
  const v1: UserV1 = { id: row.id, name: row.name, email: row.email, version: row.version };
  if (schemaVersion < 2) return v1;
  return { ...v1, updatedAt: row.updated_at.toISOString() };
}

/** Ids are PostgreSQL `integer` primary keys: 1 .. 2^31-1. */
const MAX_ID = 2_147_483_647;

/** The :id of a URL: a plain positive integer (no sign, no leading zero, no exponent) up to MAX_ID. */
const userId = z.string().transform((raw, ctx) => {
  const id = /^[1-9][0-9]{0,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (Number.isNaN(id) || id > MAX_ID) {
    ctx.addIssue({
      code: 'custom',
      message: `must be a whole number from 1 to ${MAX_ID}, got ${JSON.stringify(raw.slice(0, 40))}`,
    });
    return z.NEVER;
  }
  return id;
});

/** The route parameters of /users/:id. */
export const userParams = z.object({ id: userId });

/** A deliberately simple email check: something@something, no spaces. Real validation is a confirmation mail. */
const EMAIL = /^[^\s@]+@[^\s@]+$/;

/** PostgreSQL text cannot hold U+0000; refused here, it would otherwise come back as a 500 (SQLSTATE 22021). */
const noNul = (value: string) => !value.includes('\u0000');
const NUL_MESSAGE = 'must not contain the NUL character (\\u0000)';

const NAME_MESSAGE = 'must be a string of 1 to 100 characters';
const EMAIL_MESSAGE = 'must look like user@example.com (at most 254 characters)';

/**
 * A PUT body: an object with a name (trimmed in the result) and an email. Every problem is reported,
 * one per field; a body that is not an object at all (`null`, an array, a string) says what it should be.
 */
export const userInput = z.object(
  {
    name: z
      .string({ error: NAME_MESSAGE })
      .refine((name) => name.trim().length > 0 && name.length <= 100, { error: NAME_MESSAGE, abort: true })
      .refine(noNul, { error: NUL_MESSAGE })
      .transform((name) => name.trim()),
    email: z
      .string({ error: EMAIL_MESSAGE })
      .refine((email) => email.length <= 254 && EMAIL.test(email), { error: EMAIL_MESSAGE, abort: true })
      .refine(noNul, { error: NUL_MESSAGE }),
  },
  { error: 'body must be a JSON object like {"name": "Ada Lovelace", "email": "ada@example.com"}' },
);

/** What PUT /users/:id accepts, once checked: the name trimmed. */
export type UserInput = z.infer<typeof userInput>;
