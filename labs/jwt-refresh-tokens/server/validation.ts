/**
 * Request input as zod schemas, checked by the kit's `parseInput`: a failure is a 400 problem whose
 * `errors` name each field and what it must be (`password: must be a non-empty string`).
 */
import { z } from '@labs/lab-kit';
import type { Credentials } from './token-service.ts';

/** Long enough for any passphrase, short enough that nobody makes us hash a megabyte. */
export const MAX_PASSWORD_LENGTH = 1024;
const MAX_USERNAME_LENGTH = 64;
const NON_EMPTY = 'must be a non-empty string';

/** `{ "username": string, "password": string }`; the username is trimmed, the password kept as sent. */
export const loginBody = z.object(
  {
    username: z
      .string({ error: NON_EMPTY })
      .trim()
      .min(1, NON_EMPTY)
      .max(MAX_USERNAME_LENGTH, `must be at most ${MAX_USERNAME_LENGTH} characters`),
    password: z
      .string({ error: NON_EMPTY })
      .min(1, NON_EMPTY)
      .max(MAX_PASSWORD_LENGTH, `must be at most ${MAX_PASSWORD_LENGTH} characters`),
  },
  // Also what a form post gets: express.json() leaves any other content type unparsed.
  { error: 'Send a JSON object: {"username": "...", "password": "..."} with Content-Type: application/json' },
);

const BEARER = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

/** The token of `Authorization: Bearer <token>`: absent is fine (undefined), malformed is a 400. */
const bearerHeader = z
  .string()
  .optional()
  .transform((header, ctx) => {
    if (header === undefined || header === '') return undefined;
    const match = BEARER.exec(header.trim());
    if (!match) {
      ctx.addIssue({ code: 'custom', message: 'must be "Bearer <access token>"' });
      return z.NEVER;
    }
    return match[1];
  });

/**
 * What a request presents, from `{ authorization: req.get('authorization'), refreshCookie: <cookie> }`.
 * A refresh cookie that is empty or not text (cookie-parser turns `j:{...}` into an object) counts as
 * absent: the token code then answers 401, as for no cookie at all.
 */
export const credentialsInput: z.ZodType<Credentials> = z
  .object({
    authorization: bearerHeader,
    refreshCookie: z.unknown().transform((value) => (typeof value === 'string' && value !== '' ? value : undefined)),
  })
  .transform(({ authorization, refreshCookie }) => ({ accessToken: authorization, refreshToken: refreshCookie }));
