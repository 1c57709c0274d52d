/**
 * What a user is, on the wire and in the database, and how a request's input is checked. Shared by
 * every version of the cache; the learner does not edit this file.
 *
 * The JSON shape of a user depends on the *schema version* the app was deployed with. Version 1 is
 * { id, name, email, version }; version 2 (the current release) adds `updatedAt`. A deployment that
 * bumps the version is exactly the moment a cache that ignores it serves yesterday's shape.
 */

/** The schema version this release of the code writes and expects. */
export const CURRENT_SCHEMA_VERSION = 2;

/** A row of the `users` table. `version` goes up by one on every write. */
export interface UserRow {
  id: number;
  name: string;
  email: string;
  version: number;
  updated_at: Date;
}

/** A user as schema version 1 presented it. */
export interface UserV1 {
  id: number;
  name: string;
  email: string;
  /** Row version: 1 when created, +1 per write. Lets a client tell an old read from a new one. */
  version: number;
}

/** A user as schema version 2 (current) presents it. */
export interface UserV2 extends UserV1 {
  /** ISO 8601 time of the last write. */
  updatedAt: string;
}

/** A user in the shape of some schema version: what the API returns and what a cache stores. */
export type User = UserV1 | UserV2;

/** What PUT /users/:id accepts. */
export interface UserInput {
  name: string;
  email: string;
}

/** Turns a row into the JSON shape of `schemaVersion`. */
export function presentUser(row: UserRow, schemaVersion: number): User {
  const v1: UserV1 = { id: row.id, name: row.name, email: row.email, version: row.version };
  if (schemaVersion < 2) return v1;
  return { ...v1, updatedAt: row.updated_at.toISOString() };
}

/** Ids are PostgreSQL `integer` primary keys: 1 .. 2^31-1. */
const MAX_ID = 2_147_483_647;

/** Parses the :id of a URL. Anything but a plain positive integer is an error message. */
export function parseUserId(raw: string): { id: number } | { error: string } {
  const id = /^[1-9][0-9]{0,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(id) || id > MAX_ID) {
    return { error: `id must be a whole number from 1 to ${MAX_ID}, got "${raw.slice(0, 40)}"` };
  }
  return { id };
}

/** A deliberately simple email check: something@something, no spaces. Real validation is a confirmation mail. */
const EMAIL = /^[^\s@]+@[^\s@]+$/;

/** Checks a PUT body. Returns the input with `name` trimmed, or every problem found, joined. */
export function parseUserInput(body: unknown): { input: UserInput } | { error: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { error: 'body must be a JSON object like {"name": "Ada Lovelace", "email": "ada@example.com"}' };
  }
  const { name, email } = body as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > 100) {
    problems.push('name must be a string of 1 to 100 characters');
  }
  if (typeof email !== 'string' || email.length > 254 || !EMAIL.test(email)) {
    problems.push('email must look like user@example.com (at most 254 characters)');
  }
  if (problems.length > 0) return { error: problems.join('; ') };
  return { input: { name: (name as string).trim(), email: email as string } };
}
