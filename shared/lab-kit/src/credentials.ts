/**
 * Credentials as input: a login's username and password, the bearer token a request carries and the
 * secret a server is configured with, checked by zod like every other input, in the kit's one style.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';

const NON_EMPTY = 'must be a non-empty string';

/**
 * A login body, `{ "username": string, "password": string }`: the username trimmed (at most 64
 * characters), the password kept as sent, and at most 1024 characters: long enough for any
 * passphrase, short enough that nobody makes the server hash a megabyte. Anything but such an object
 * (a form post, which express.json() leaves unparsed) is one issue that says what to send.
 */
export function loginInput() {
  return z.object(
    {
      username: z.string({ error: NON_EMPTY }).trim().min(1, NON_EMPTY).max(64, 'must be at most 64 characters'),
      password: z.string({ error: NON_EMPTY }).min(1, NON_EMPTY).max(1024, 'must be at most 1024 characters'),
    },
    { error: 'Send a JSON object: {"username": "...", "password": "..."} with Content-Type: application/json' },
  );
}

/** RFC 6750's b64token: the characters a bearer token may have, `=` padding only at its end. */
const BEARER = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

/**
 * An `Authorization` header read as `Bearer <token>` (give it `req.get('authorization')`): absent or
 * empty is undefined (a route decides whether it needs one: a 401), anything else but a bearer token
 * is an issue, so a malformed header is the client's mistake, a 400 through `parseInput`.
 */
export function bearerToken() {
  return z
    .string()
    .optional()
    .transform((header, ctx) => {
      if (header === undefined || header === '') return undefined;
      const match = BEARER.exec(header.trim());
      if (!match) {
        ctx.addIssue({ code: 'custom', message: 'must be "Bearer <token>"' });
        return z.NEVER;
      }
      return match[1];
    });
}

/**
 * A secret read from the environment (an HMAC key, a token tag's key): at least `minLength`
 * characters, which rules out a password someone made up. Absent or empty, it is `undefined`, or with
 * `randomIfUnset` a random one of 32 bytes, made once per process: right for one instance, whose
 * tokens then end with it; instances that share clients must share the secret.
 */
export function secretSetting(options: { minLength?: number; randomIfUnset: true }): z.ZodType<string, unknown>;
export function secretSetting(options?: {
  minLength?: number;
  randomIfUnset?: false;
}): z.ZodType<string | undefined, unknown>;
export function secretSetting(
  options: { minLength?: number; randomIfUnset?: boolean } = {},
): z.ZodType<string | undefined, unknown> {
  const { minLength = 32, randomIfUnset = false } = options;
  const tooShort = `must be at least ${minLength} characters (openssl rand -base64 32 makes one)`;
  return z
    .string()
    .optional()
    .transform((secret, ctx) => {
      if (secret === undefined || secret === '')
        return randomIfUnset ? randomBytes(32).toString('base64url') : undefined;
      if (secret.length < minLength) {
        ctx.addIssue({ code: 'custom', message: tooShort });
        return z.NEVER;
      }
      return secret;
    });
}
