/** Request checks for the routes, each failure one sentence a client developer can act on. */

export interface LoginBody {
  username: string;
  password: string;
}

/** Long enough for any passphrase, short enough that nobody makes us hash a megabyte. */
export const MAX_PASSWORD_LENGTH = 1024;
const MAX_USERNAME_LENGTH = 64;

export type Checked<T> = { ok: true; value: T } | { ok: false; error: string };

/** Checks a parsed JSON body for `{ "username": string, "password": string }`. */
export function parseLoginBody(body: unknown): Checked<LoginBody> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return {
      ok: false,
      error: 'Send a JSON object: {"username": "...", "password": "..."} with Content-Type: application/json',
    };
  }
  const { username, password } = body as Record<string, unknown>;
  if (typeof username !== 'string' || username.trim() === '')
    return { ok: false, error: '"username" must be a non-empty string' };
  if (username.length > MAX_USERNAME_LENGTH)
    return { ok: false, error: `"username" must be at most ${MAX_USERNAME_LENGTH} characters` };
  if (typeof password !== 'string' || password === '')
    return { ok: false, error: '"password" must be a non-empty string' };
  if (password.length > MAX_PASSWORD_LENGTH)
    return { ok: false, error: `"password" must be at most ${MAX_PASSWORD_LENGTH} characters` };
  return { ok: true, value: { username: username.trim(), password } };
}

/** The token from `Authorization: Bearer <token>`, undefined when absent, an error when malformed. */
export function bearerToken(header: string | undefined): Checked<string | undefined> {
  if (header === undefined || header === '') return { ok: true, value: undefined };
  const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header.trim());
  if (!match) return { ok: false, error: 'The Authorization header must be "Bearer <access token>"' };
  return { ok: true, value: match[1] };
}
