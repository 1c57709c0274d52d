/**
 * A message read as JSON and checked by a schema: a WebSocket frame, a queue message's body, a Kafka
 * record's value. Each arrives as text from someone the server does not control, so "not JSON" and
 * "JSON of the wrong shape" are answers (an error frame, a poison message set aside), never a crash.
 */
import type { z } from 'zod';
import { describeIssues } from './input.ts';

/** What {@link readJsonMessage} found: the value, or why there is none. */
export type JsonMessage<T> =
  | { ok: true; value: T }
  /** `notJson`: the text did not parse; otherwise `issues` are what the schema refused. */
  | { ok: false; notJson: boolean; detail: string; issues: readonly z.core.$ZodIssue[] };

/**
 * Parses `text` as JSON and checks it with `schema`. On a failure `detail` says why in the kit's one
 * style (`room: must be 1-64 characters ...`), with the text's start when it is not JSON at all.
 */
export function readJsonMessage<T>(text: string, schema: z.ZodType<T>): JsonMessage<T> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, notJson: true, detail: `not valid JSON: ${JSON.stringify(text.slice(0, 40))}`, issues: [] };
  }
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, value: result.data };
  return { ok: false, notJson: false, detail: describeIssues(result.error).join('; '), issues: result.error.issues };
}
