/**
 * Request input and configuration checked by one library (zod), with one message style: which field,
 * what was expected, what came. A lab writes its rules as a schema, never as a hand-written parser.
 */
import type { Request, Response } from 'express';
import { z } from 'zod';
import { sendProblem } from './problem.ts';

/** One line per problem: `limit: must be at most 100`. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) =>
    issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message,
  );
}

/**
 * Checks `value` against `schema`. On success returns the parsed value; otherwise answers 400 with a
 * problem body listing every issue (`errors`) and returns undefined, so a handler writes:
 *
 *   const page = parseInput(res, pageQuery, req.query); if (!page) return;
 */
export function parseInput<T>(res: Response, schema: z.ZodType<T>, value: unknown): T | undefined {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const errors = describeIssues(result.error);
  sendProblem(res, 400, errors.join('; '), { errors });
  return undefined;
}

/** The parts of a request {@link parseRequest} reads. */
type RequestParts = { params?: z.ZodType; body?: z.ZodType; query?: z.ZodType };

/**
 * {@link parseInput} for several parts of a request at once, in the order given: the parsed parts, or
 * undefined once one fails (its 400 sent), so a handler writes
 *
 *   const got = parseRequest(req, res, { params: userParams, body: userInput }); if (!got) return;
 */
export function parseRequest<S extends RequestParts>(
  req: Request,
  res: Response,
  schemas: S,
): { [K in keyof S]: z.output<NonNullable<S[K]>> } | undefined {
  const parsed: Record<string, unknown> = {};
  for (const [part, schema] of Object.entries(schemas) as [keyof RequestParts, z.ZodType][]) {
    parsed[part] = parseInput(res, schema, req[part]);
    if (parsed[part] === undefined) return undefined;
  }
  return parsed as { [K in keyof S]: z.output<NonNullable<S[K]>> };
}

/** A configuration problem (an environment variable out of range): a message for the reader, no stack. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Reads configuration from `env` through `schema`; throws a ConfigError naming every bad variable. */
export function readConfig<T>(schema: z.ZodType<T>, env: NodeJS.ProcessEnv = process.env): T {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  throw new ConfigError(describeIssues(result.error).join('\n'));
}

/**
 * A whole number written as text (an environment variable, a query parameter): absent (or empty,
 * unless `emptyIsAbsent: false`) gives `fallback`; anything but digits, or a value outside min..max, is an issue that says the range and
 * what came. Repeated query parameters (`?limit=1&limit=2`) arrive as an array and are refused too.
 */
export function wholeNumber(options: {
  fallback: number;
  min: number;
  max: number;
  /** Whether an empty value (`?limit=`) means the fallback (true, for environment variables) or is refused. */
  emptyIsAbsent?: boolean;
}) {
  const { fallback, min, max, emptyIsAbsent = true } = options;
  const range = `must be a whole number from ${min} to ${max}`;
  // .optional() first: an absent key is a value here (the fallback), not a missing field.
  return z
    .unknown()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || (raw === '' && emptyIsAbsent)) return fallback;
      if (typeof raw !== 'string' || !/^\d{1,15}$/.test(raw.trim())) {
        ctx.addIssue({ code: 'custom', message: `${range}, got ${JSON.stringify(raw)}` });
        return z.NEVER;
      }
      const value = Number(raw.trim());
      if (value < min || value > max) {
        ctx.addIssue({ code: 'custom', message: `${range}, got ${JSON.stringify(raw)}` });
        return z.NEVER;
      }
      return value;
    });
}

/** PORT: 0 (any free port) to 65535, default 3000. */
export const port = () => wholeNumber({ fallback: 3000, min: 0, max: 65_535 });
