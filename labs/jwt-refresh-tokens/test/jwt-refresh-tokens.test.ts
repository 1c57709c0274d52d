/**
 * The spec. Baseline tests hold for any token scheme; `challenge:` tests fail on the single-JWT starter
 * and pass on short access tokens + rotated refresh tokens. Time is a fake clock (or, for the test of
 * two servers whose clocks disagree, a fake Date); nothing is timed. The forged tokens are signed with
 * the lab's real key wherever only the claims or the header should give them away.
 */
import { createHash, createHmac, createPublicKey, randomBytes, sign as rsaSign } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { formatWithOptions } from 'node:util';
import type { Redis } from 'ioredis';
import { decodeJwt, decodeProtectedHeader, SignJWT, type JWK, type JWTPayload } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRedisClient } from '@labs/services';
import {
  credentialsInRedis,
  expectNoCredentialAtRest,
  keysWithoutExpiry,
  recordCredential,
  recordedCredentials,
  stallingProxy,
  useLab,
} from '@labs/test-kit';
import { createKeyRing } from '../server/keys.ts';
import jwtLab from '../server/lab.ts';
import { TOKEN_DEFAULTS } from '../server/token-defaults.ts';
import { createUserStore, DEMO_USERS } from '../server/users.ts';
import {
  ACCESS_TTL_SEC,
  CLOCK_TOLERANCE_SEC,
  holdWrites,
  MINUTE,
  startApp as startAppOn,
  startTwin,
  storedEntries,
  Tab,
  type TestApp,
} from './helpers.ts';

const [ada, grace] = DEMO_USERS;
// The lab as `lab serve` starts it, with this file's own key prefix; every app below is built on it and
// shares one Redis client and one user store (hashing the demo passwords takes a moment). The test kit
// closes it after the file and checks its invariants after each test: every key a session leaves in
// Redis expires, and no token a Tab was handed (helpers.ts records them) is stored verbatim.
const lab = await useLab(jwtLab);
const redis = await lab.context.redis();
const users = await createUserStore();
afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

/** A fresh app on this file's lab: its own fake clock, keys and key prefix. */
const startApp = () => startAppOn(lab, { redis, users });

/** A fresh app and a browser tab logged in as Ada. */
async function loggedIn(): Promise<{ app: TestApp; tab: Tab }> {
  const app = await startApp();
  const tab = new Tab(app.url);
  const { status } = await tab.login(ada.username, ada.password);
  expect(status).toBe(200);
  return { app, tab };
}

/** Past the access token's lifetime and the verifier's skew allowance. */
const PAST_ACCESS_EXPIRY = (ACCESS_TTL_SEC + CLOCK_TOLERANCE_SEC) * 1000 + MINUTE;

/**
 * The claims of the tab's real access token, issued afresh at the fake clock's time. A forgery that
 * carries them (and the real header's kid and typ) differs from an honest token only in how it is
 * signed, so nothing but the signature check can give it away.
 */
function realClaims(app: TestApp, tab: Tab): JWTPayload {
  const iat = Math.floor(app.clock.now() / 1000);
  return { ...decodeJwt(tab.accessToken!), iat, exp: iat + ACCESS_TTL_SEC };
}

const base64url = (json: object) => Buffer.from(JSON.stringify(json)).toString('base64url');

/** A token signed RS256 with the app's current key, with any header at all (jose would refuse to sign some). */
function signedAsIs(app: TestApp, header: object, claims: object): string {
  const input = `${base64url(header)}.${base64url(claims)}`;
  const signature = rsaSign('sha256', Buffer.from(input), app.keys.current().privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

/** A port nothing listens on (it was free a moment ago): Redis "down" for a client pointed at it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function meWith(app: TestApp, token: string): Promise<number> {
  const res = await fetch(`${app.url}/me`, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

/**
 * A refresh token and each of its parts long enough to be a secret (16 characters) that no access token
 * discloses anyway (`disclosed`: their claims; a session id in `sid` is no secret). Each one alone, with
 * what the access token shows, rebuilds the refresh token.
 */
function refreshSecrets(refreshToken: string, disclosed: string[]): { value: string; what: string }[] {
  const parts = refreshToken
    .split(/[^A-Za-z0-9_+/=-]+/)
    .filter((part) => part.length >= 16 && !disclosed.some((claim) => claim.includes(part)));
  return [
    { value: refreshToken, what: 'the refresh token' },
    ...parts.map((part, i) => ({ value: part, what: `part ${i + 1} of the refresh token` })),
  ];
}

/** Every credential a Tab of this file was handed (helpers.ts records them), refresh tokens with their secret parts. */
function handedOutSecrets(): { value: string; what: string }[] {
  const handed = recordedCredentials();
  const accessTokens = handed.filter((c) => c.what === 'an access token');
  const disclosed = accessTokens.flatMap((c) => Object.values(decodeJwt(c.value)).map(String));
  return handed.flatMap((c) => (c.what === 'the refresh cookie' ? refreshSecrets(c.value, disclosed) : [c]));
}

/** What the process wrote to a log during a test (see `captureLogs`). */
interface CapturedLogs {
  /** All of it as text, objects rendered whole (no depth limit, no long string cut or folded). */
  text(): string;
  /** The calls of the console methods named, each with its arguments as given. */
  calls(...methods: ConsoleMethod[]): unknown[][];
}

type ConsoleMethod = (typeof CONSOLE_METHODS)[number];
const CONSOLE_METHODS = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;

/**
 * Captures, until the test ends, everything the process writes to a log: every console method and the
 * standard streams (a logger that bypasses console writes there). Nothing of it reaches the terminal.
 */
function captureLogs(): CapturedLogs {
  const written: string[] = [];
  const options = { depth: Infinity, breakLength: Infinity, maxStringLength: Infinity, maxArrayLength: Infinity };
  const spies = CONSOLE_METHODS.map((method) =>
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      written.push(formatWithOptions(options, ...args));
    }),
  );
  for (const stream of [process.stdout, process.stderr])
    vi.spyOn(stream, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      written.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
      return true;
    }) as typeof stream.write);
  return {
    text: () => written.join('\n'),
    calls: (...methods) => methods.flatMap((method) => spies[CONSOLE_METHODS.indexOf(method)]!.mock.calls),
  };
}

/**
 * Fails when `logs` hold any credential a Tab of this file was handed, or the secret part of a refresh
 * token: a log goes to a log service, to everyone who can search it, kept for months.
 */
function expectNoCredentialLogged(logs: CapturedLogs): void {
  const text = logs.text();
  const secrets = handedOutSecrets();
  const found = secrets.filter((secret) => text.includes(secret.value));
  expect(
    found.map((secret) => secret.what),
    `${found.length} of the ${secrets.length} credentials (and secret parts) handed to the tabs found in what the server logged`,
  ).toEqual([]);
}

describe('baseline: logging in and using an access token', () => {
  it('logs in with the right password, and /me answers with the user', async () => {
    const { tab } = await loggedIn();
    const res = await tab.send('GET', '/me');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      user: { id: ada.id, username: ada.username, displayName: ada.displayName },
    });
  });

  it('answers a wrong password and an unknown user with the same 401', async () => {
    const app = await startApp();
    const wrongPassword = await new Tab(app.url).login(ada.username, 'not the password');
    const unknownUser = await new Tab(app.url).login('nobody-here', 'not the password');
    expect(wrongPassword.status).toBe(401);
    expect(unknownUser.status).toBe(401);
    expect(wrongPassword.json).toMatchObject({ status: 401, title: 'Unauthorized' });
    expect(unknownUser.json).toEqual(wrongPassword.json);
  });

  it('answers malformed login bodies with a 400 that says what is wrong', async () => {
    const app = await startApp();
    const post = async (body: string, contentType = 'application/json') => {
      const res = await fetch(`${app.url}/login`, { method: 'POST', headers: { 'content-type': contentType }, body });
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const problem = (await res.json()) as { status?: number; detail?: string };
      return { status: res.status, problemStatus: problem.status, detail: String(problem.detail) };
    };
    expect(await post('{"username": "ada", ')).toEqual({
      status: 400,
      problemStatus: 400,
      detail: 'The body is not valid JSON',
    });
    expect(await post('username=ada', 'application/x-www-form-urlencoded')).toMatchObject({
      status: 400,
      problemStatus: 400,
      detail: expect.stringContaining('JSON object'),
    });
    expect(await post('{"username": "ada"}')).toEqual({
      status: 400,
      problemStatus: 400,
      detail: 'password: must be a non-empty string',
    });
    expect(await post('{"username": 42, "password": "x"}')).toEqual({
      status: 400,
      problemStatus: 400,
      detail: 'username: must be a non-empty string',
    });
    expect(await post(JSON.stringify({ username: 'ada', password: 'x'.repeat(1025) }))).toEqual({
      status: 400,
      problemStatus: 400,
      detail: 'password: must be at most 1024 characters',
    });
  });

  it('hashes once per login attempt, for unknown users too, so timing does not reveal who exists', async () => {
    let hashes = 0;
    const counted = await createUserStore({
      onHash: () => {
        hashes += 1;
      },
    });
    expect(await counted.verifyCredentials('nobody-here', 'whatever')).toBeUndefined();
    expect(await counted.verifyCredentials(ada.username, 'wrong')).toBeUndefined();
    expect(await counted.verifyCredentials(ada.username, ada.password)).toMatchObject({ id: ada.id });
    expect(hashes).toBe(3);
  });

  it('keeps passwords only as argon2id hashes', () => {
    const stored = users.findById(ada.id)!.passwordHash;
    expect(stored).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(stored).not.toContain(ada.password);
  });

  it('refuses /me without a token, with a malformed header, with a tampered token, and with a token under a kid it never issued', async () => {
    const { app, tab } = await loggedIn();
    const none = await fetch(`${app.url}/me`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    const malformed = await fetch(`${app.url}/me`, { headers: { authorization: 'Token abc' } });
    expect(malformed.status).toBe(400);
    // Claim to be Grace by swapping the payload, keeping Ada's signature.
    const [header, , signature] = tab.accessToken!.split('.');
    const payload = base64url({ ...realClaims(app, tab), sub: grace.id });
    expect(await meWith(app, `${header}.${payload}.${signature}`)).toBe(401);
    // A token naming a key this API never had (another deployment's, or a kid made up): there is no key
    // to check it with, which is the client's problem, not the server's. A 401 with its reason, like any
    // refused token; never a 500 from code that took the kid for one of ours.
    const stranger = createKeyRing().current();
    const foreign = await new SignJWT(realClaims(app, tab))
      .setProtectedHeader({ ...decodeProtectedHeader(tab.accessToken!), alg: 'RS256', kid: stranger.kid })
      .sign(stranger.privateKey);
    const res = await fetch(`${app.url}/me`, { headers: { authorization: `Bearer ${foreign}` } });
    expect(res.status, 'a token under a kid this API never issued').toBe(401);
    expect(await res.json()).toMatchObject({ code: 'invalid', detail: expect.stringMatching(/\w/) });
  });

  it('rejects an expired access token', async () => {
    const app = await startApp();
    const tab = new Tab(app.url);
    const { json } = await tab.login(ada.username, ada.password);
    // The app was built with a lifetime other than the default: the token and the answer must both say it.
    const { iat, exp } = decodeJwt(tab.accessToken!);
    expect(
      { lifetime: exp! - iat!, expiresIn: json.expiresIn },
      `the access token's exp - iat, and expiresIn, with accessTtlSec set to ${ACCESS_TTL_SEC}`,
    ).toEqual({ lifetime: ACCESS_TTL_SEC, expiresIn: ACCESS_TTL_SEC });
    app.clock.advance(PAST_ACCESS_EXPIRY);
    const res = await tab.send('GET', '/me');
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.json()).toMatchObject({ status: 401, code: 'expired', detail: expect.stringMatching(/\w/) });
  });

  it('still accepts a token signed by the previous key right after a key rotation, and signs with the new one from then on', async () => {
    const { app, tab } = await loggedIn();
    app.keys.rotate();
    app.clock.advance(MINUTE);
    expect(await tab.me()).toBe(200);
    const second = new Tab(app.url);
    expect((await second.login(grace.username, grace.password)).status).toBe(200);
    expect(await second.me()).toBe(200);
    // Once the old key's grace is over, what the API hands out must still work: a token signed after
    // the rotation is the new key's. Code that looked the signing key up once, when it started, keeps
    // signing with the retired one, and every login and refresh from then on is refused at once.
    app.clock.advance(PAST_ACCESS_EXPIRY);
    const later = new Tab(app.url);
    expect((await later.login(grace.username, grace.password)).status).toBe(200);
    expect(await later.me(), "a login's token, after the old key's grace: still signed with the retired key?").toBe(
      200,
    );
    if (tab.jar.cookie) {
      expect((await tab.refresh()).status).toBe(200);
      expect(await tab.me(), "a refresh's token, after the old key's grace: still signed with the retired key?").toBe(
        200,
      );
    }
  });

  it('answers /refresh and /logout without any credentials, or with made-up ones, with a 401', async () => {
    const app = await startApp();
    // Each 401 says why, in words (detail) and as a code a client can act on (missing: log in; invalid).
    for (const path of ['/refresh', '/logout']) {
      const res = await fetch(`${app.url}${path}`, { method: 'POST' });
      expect(res.status, path).toBe(401);
      expect(await res.json(), path).toMatchObject({ code: 'missing', detail: expect.stringMatching(/\w/) });
    }
    const junk = { authorization: 'Bearer not.a.jwt', cookie: 'refresh_token=made-up; other=j%3A%7B' };
    for (const path of ['/refresh', '/logout']) {
      const res = await fetch(`${app.url}${path}`, { method: 'POST', headers: junk });
      expect(res.status, path).toBe(401);
      expect(await res.json(), path).toMatchObject({ code: 'invalid', detail: expect.stringMatching(/\w/) });
    }
  });

  it('a forged or tampered access token logs nobody out: a 401, and the session lives on', async () => {
    // Logout accepts an expired access token (an idle user must be able to end the session), but only
    // one whose signature, key and claims hold: otherwise anyone who learned a session id could end it.
    // The forgeries come twice: under the current key's kid, then under the kid of a retired key whose
    // grace is over. That key is refused before any signature is checked, and the refusal must not turn
    // into "a token from before the rotation, so read its session id anyway".
    const { app, tab } = await loggedIn();
    const stranger = createKeyRing({ now: app.clock.now });
    /** Forgeries of the tab's access token as it is now, each sent to /logout; the names of those not refused. */
    const notRefused = async (under: string) => {
      const claims = realClaims(app, tab);
      const header = decodeProtectedHeader(tab.accessToken!);
      const [, , signature] = tab.accessToken!.split('.');
      const forged = {
        'tampered payload, the real signature': `${base64url(header)}.${base64url({ ...claims, jti: 'x' })}.${signature}`,
        'signed by another key': await new SignJWT(claims)
          .setProtectedHeader({ ...header, alg: 'RS256' })
          .sign(stranger.current().privateKey),
        'expired, signed by another key': await new SignJWT({
          ...claims,
          iat: claims.iat! - 3600,
          exp: claims.iat! - 1800,
        })
          .setProtectedHeader({ ...header, alg: 'RS256' })
          .sign(stranger.current().privateKey),
        'alg none': `${base64url({ ...header, alg: 'none' })}.${base64url(claims)}.`,
      };
      const accepted: string[] = [];
      for (const [name, token] of Object.entries(forged)) {
        const res = await fetch(`${app.url}/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
        await res.arrayBuffer();
        if (res.status !== 401) accepted.push(`${name}, ${under}: ${res.status}`);
      }
      return accepted;
    };
    expect(await notRefused('under our kid'), 'forged logouts not refused').toEqual([]);
    // A refresh cookie sent to /logout names its family too, but only a tag this server made proves it:
    // the session id (any access token's `sid`) with a made-up tag is no credential.
    const madeUp = `${String(decodeJwt(tab.accessToken!).sid)}.0.${'A'.repeat(42)}w`;
    const byCookie = await fetch(`${app.url}/logout`, {
      method: 'POST',
      headers: { cookie: `refresh_token=${madeUp}` },
    });
    await byCookie.arrayBuffer();
    expect(byCookie.status, 'a logout with a made-up refresh cookie naming the session').toBe(401);
    expect(await tab.me(), 'the access token still works').toBe(200);
    expect((await tab.refresh()).status, 'the session lives on after forged logouts').toBe(200);
    // The tab's access token was signed by the key about to retire; its grace (one access lifetime plus
    // the skew) is over once PAST_ACCESS_EXPIRY has passed.
    app.keys.rotate();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect(await notRefused('under a retired kid past its grace'), 'forged logouts not refused').toEqual([]);
    // Where the server issued a refresh cookie (the starter issues none), the session still refreshes.
    if (tab.jar.cookie)
      expect((await tab.refresh()).status, 'the session lives on after forged logouts under a retired kid').toBe(200);
  });

  it('logs no credential it hands out: no token, nor the secret part of a refresh token, in any line', async () => {
    // A log goes further than Redis: to a log service, to everyone who can search it, kept for months. A
    // token in a line ("which session got which tokens", an error that prints the request) is a live
    // session for whoever reads it. Every route and every refresh verdict runs once below while all the
    // process writes is captured: the other tests check the statuses, this one only reads the logs.
    const logged = captureLogs();
    const { app, tab } = await loggedIn();
    await tab.me();
    const racing = new Tab(app.url); // a second tab, about to send the login's cookie a second late
    const thief = new Tab(app.url); // and someone who copied it, to use it much later
    racing.jar.cookie = thief.jar.cookie = tab.jar.cookie;
    app.clock.advance(PAST_ACCESS_EXPIRY);
    await tab.refresh(); // rotated
    app.clock.advance(1000);
    await racing.refresh(); // a racing tab, answered with the current token
    app.clock.advance(MINUTE);
    await thief.refresh(); // a replay: the family is revoked
    await tab.refresh(); // refused: revoked
    const idle = new Tab(app.url);
    await idle.login(grace.username, grace.password);
    app.clock.advance(PAST_ACCESS_EXPIRY);
    await (await idle.send('POST', '/logout')).arrayBuffer(); // with an expired access token
    expectNoCredentialLogged(logged);
  });

  for (const fault of ['down', 'stalled'] as const) {
    it(`answers /login and /refresh with a 503 and Retry-After while Redis is ${fault}, promptly, logging one line and no credential`, async () => {
      // Down: a port nothing listens on. Stalled: the test kit's proxy, connected and then silent, so
      // only the client's command timeout (1 s, createRedisClient's) can end the wait.
      let faulty: Redis;
      if (fault === 'down') {
        faulty = createRedisClient(`redis://127.0.0.1:${await closedPort()}`);
      } else {
        const proxy = await stallingProxy(`redis://${redis.options.host ?? '127.0.0.1'}:${redis.options.port ?? 6379}`);
        lab.context.onClose(() => proxy[Symbol.asyncDispose]());
        faulty = createRedisClient(proxy.url);
        if (faulty.status !== 'ready') await once(faulty, 'ready');
        proxy.stall();
      }
      faulty.on('error', () => {}); // reconnect attempts are expected here
      lab.context.onClose(() => faulty.disconnect());
      // Real credentials: Ada logs in through a healthy instance, then her browser talks to another
      // instance of the same deployment (its secret and keys) whose Redis is at fault. A made-up cookie
      // is refused before it reaches Redis, so it would never meet the outage, nor any code that logs it.
      const { app: healthy, tab } = await loggedIn();
      const app = await startTwin(lab, healthy, { redis: faulty });
      const there = new Tab(app.url, tab.jar);
      there.accessToken = tab.accessToken;
      const logged = captureLogs();
      const login = () => new Tab(app.url).send('POST', '/login', { username: ada.username, password: ada.password });
      const refresh = () => there.send('POST', '/refresh');
      // Token code that needs no Redis on a route answers as it always does there; code that does must
      // say "come back soon" (a 503 a client can act on), never a 500, and within a few seconds.
      const late: string[] = [];
      for (const [path, send, withoutRedis] of [
        ['/login', login, 200],
        ['/refresh', refresh, 200],
      ] as const) {
        for (let i = 0; i < 2; i++) {
          const sent = performance.now();
          const res = await send();
          if (performance.now() - sent > 5000) late.push(path);
          expect([withoutRedis, 503], `${path} answered ${res.status}`).toContain(res.status);
          if (res.status !== 503) {
            recordCredential(((await res.json()) as { accessToken?: string }).accessToken, 'an access token');
            continue;
          }
          expect(Number(res.headers.get('retry-after')), path).toBeGreaterThanOrEqual(1);
          expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
          expect(await res.json()).toMatchObject({ status: 503, title: 'Service Unavailable' });
          expect(res.headers.getSetCookie(), 'an outage must not log the user out').toEqual([]);
        }
      }
      expect(late, 'requests answered after more than 5 s').toEqual([]);
      // The outage's line names the store, never the credentials of the request it cut short.
      expectNoCredentialLogged(logged);
      const lines = logged.calls('error', 'warn');
      expect(lines.length, 'one line per outage, not one per request').toBeLessThanOrEqual(1);
      expect(
        lines.flat().every((part) => typeof part === 'string'),
        'a line of text, not an error object with its stack',
      ).toBe(true);
    });
  }

  it('survives Redis being reset, refused and stalled under concurrent load: a 200 or a 503 naming the session store, no session lost', async () => {
    // Twenty browsers keep logging in and refreshing while Redis's connection is cut mid-script (a
    // reset), stays refused, comes back, and then stalls. Every answer is a success or a 503 with
    // Retry-After that names the session store, within a few seconds; nothing escapes as an unhandled
    // rejection or exception that would kill a real server. No honest session is lost: a refresh whose
    // answer was cut off after Redis rotated the family is retried with the same cookie, which the
    // racing-tabs grace answers, and once Redis is back every browser refreshes again. And none of the
    // credentials the browsers hold shows up in what the server logs about the outage.
    await using proxy = await stallingProxy(
      `redis://${redis.options.host ?? '127.0.0.1'}:${redis.options.port ?? 6379}`,
    );
    const app = await startAppOn(lab, { redis: await lab.context.redis({ url: proxy.url }), users });
    const logged = captureLogs(); // the outage's one line every 5 s, and whatever else the server writes
    const escaped: unknown[] = [];
    const onEscape = (error: unknown) => escaped.push(error);
    process.on('unhandledRejection', onEscape);
    process.on('uncaughtException', onEscape);
    const seen: Record<string, number> = {};
    const wrong: string[] = [];
    let stop = false;
    /**
     * A login the first time, a refresh (with whatever the tab holds) after that; true when it succeeded.
     * `who` names the browser in what goes wrong.
     */
    const step = async (tab: Tab, who: string): Promise<boolean> => {
      const path = tab.jar.cookie || tab.accessToken ? '/refresh' : '/login';
      const sent = performance.now();
      const res = await tab.send(
        'POST',
        path,
        path === '/login' ? { username: ada.username, password: ada.password } : undefined,
      );
      const body = (await res.json()) as { accessToken?: string; detail?: string };
      const ms = performance.now() - sent;
      const outcome = `${path} ${res.status}`;
      seen[outcome] = (seen[outcome] ?? 0) + 1;
      // An outage is answered within a few seconds (a success may wait for the CPU: logins hash a password).
      if (res.status === 503 && ms > 5000) wrong.push(`${who}: ${outcome} after ${Math.round(ms)} ms`);
      if (res.status === 200) {
        tab.accessToken = body.accessToken;
        recordCredential(tab.accessToken, 'an access token');
        return true;
      }
      const retryAfter = Number(res.headers.get('retry-after'));
      if (res.status !== 503 || !(retryAfter >= 1) || !/session store/.test(body.detail ?? ''))
        wrong.push(`${who}: ${outcome}, Retry-After ${retryAfter}: ${body.detail}`);
      return false;
    };
    const tabs = Array.from({ length: 20 }, () => new Tab(app.url));
    const answered = tabs.map(() => 0);
    const browsing = tabs.map(async (tab, i) => {
      while (!stop) {
        await step(tab, `browser ${i + 1}`);
        answered[i]! += 1;
      }
    });
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const problems: string[] = [];
    /** Waits (up to 15 s) until every browser has had another answer; notes those that had none. */
    const everyBrowserAnswers = async (phase: string) => {
      const before = [...answered];
      const silent = () => answered.flatMap((n, i) => (n > before[i]! ? [] : [i + 1]));
      for (let waited = 0; waited < 15_000 && silent().length > 0; waited += 50) await pause(50);
      const left = silent();
      if (left.length > 0)
        problems.push(
          `${phase}: ${left.length} of ${tabs.length} browsers got no answer within 15 s (browsers ${left.join(', ')})`,
        );
    };
    /** Until a fresh login succeeds (bounded: the client's reconnects back off to 2 s); notes when none did. */
    const loginsSucceed = async (phase: string) => {
      for (let attempt = 1; attempt <= 50; attempt++) {
        if (await step(new Tab(app.url), `${phase}, login ${attempt}`)) return;
        await pause(100);
      }
      problems.push(`${phase}: none of 50 fresh logins succeeded, 100 ms apart`);
    };
    try {
      await pause(300);
      await proxy.kill(); // every connection reset, scripts in flight among them; then refused
      await everyBrowserAnswers('while Redis is down');
      await proxy.revive();
      await loginsSucceed('once Redis is back');
      proxy.stall();
      await everyBrowserAnswers('while Redis is stalled');
      proxy.resume();
      await loginsSucceed('once Redis answers again');
    } finally {
      stop = true;
      await Promise.all(browsing);
      process.off('unhandledRejection', onEscape);
      process.off('uncaughtException', onEscape);
    }
    const answeredWrong = [...wrong]; // before the check below, whose failures count as lost sessions
    // Every browser that holds a cookie still has its session: nothing Redis accepted, or answered, is lost.
    const lost: number[] = [];
    for (const [i, tab] of tabs.entries())
      if (tab.jar.cookie && !(await step(tab, `browser ${i + 1}, after the faults`))) lost.push(i + 1);
    const answers = Object.values(seen).reduce((sum, n) => sum + n, 0);
    const tally = `of ${answers} answers: ${JSON.stringify(seen)}`;
    expectNoCredentialLogged(logged);
    // The messages say it all on their first line, which is what `lab check` shows.
    expect(problems, `${problems.length} of 4 phases of the faults went wrong: ${problems.join('; ')}`).toEqual([]);
    expect(
      answeredWrong.slice(0, 10),
      `${answeredWrong.length} answers, to ${new Set(answeredWrong.map((line) => line.split(':')[0])).size} browsers or logins, were not a prompt 200 or a 503 naming the session store (${tally}); the first: ${answeredWrong[0]}`,
    ).toEqual([]);
    expect(
      lost,
      `${lost.length} of ${tabs.length} browsers lost their session to the faults: browsers ${lost.join(', ')} (${tally})`,
    ).toEqual([]);
    expect(escaped.map(String), 'errors that escaped every handler').toEqual([]);
  });

  it('a login, refresh or logout whose Redis connection drops after any of its writes leaves no key without an expiry, and answers no login 200 without its session', async () => {
    // A session written in two commands (the family, then its expiry) is half written when the connection
    // drops between them, as it may at any moment: the request fails, and the family stays for ever. The
    // requests go to a second instance whose Redis client the test cuts after their first writes (none,
    // one, two): whatever a request has written when it is cut off must be safe to leave as it is.
    const app = await startApp();
    const held = await lab.context.redis();
    const hold = holdWrites(held);
    const other = await startTwin(lab, app, { redis: held });
    /** Sends a request with the connection cut after its first `writes` writes; its status. */
    const cutAfter = async (writes: number, request: () => Promise<number>) => {
      hold.hold(writes);
      const status = request();
      try {
        await Promise.race([hold.reached, status]); // the request tried one write more than it was let through
      } finally {
        hold.fail();
      }
      return status;
    };
    const answers: Record<string, number[]> = { login: [], refresh: [], logout: [] };
    const sessionless: number[] = []; // the cuts after which a login said 200 without its session in Redis
    for (const writes of [0, 1, 2]) {
      const newcomer = new Tab(other.url);
      const login = async () => (await newcomer.login(ada.username, ada.password)).status;
      answers.login!.push(await cutAfter(writes, login));
      // A 200 says the session exists. A login that swallowed the failed write (or never waited for it)
      // hands out a cookie for a session Redis never got: the user is thrown out at the first refresh.
      if (answers.login!.at(-1) === 200 && newcomer.jar.cookie) {
        const back = new Tab(app.url, newcomer.jar);
        if ((await back.refresh()).status !== 200) sessionless.push(writes);
      }
      // A session logged in whole, then refreshed and ended through the instance that gets cut off.
      const tab = new Tab(app.url);
      expect((await tab.login(ada.username, ada.password)).status).toBe(200);
      const there = new Tab(other.url, tab.jar);
      there.accessToken = tab.accessToken;
      answers.refresh!.push(await cutAfter(writes, async () => (await there.refresh()).status));
      answers.logout!.push(
        await cutAfter(writes, async () => {
          const res = await there.send('POST', '/logout');
          await res.arrayBuffer();
          return res.status;
        }),
      );
    }
    expect(
      answers.login!.filter((status) => status !== 200 && status !== 503),
      'logins',
    ).toEqual([]);
    expect(
      sessionless,
      'logins answered 200, cut off after these numbers of writes, whose refresh cookie then found no session',
    ).toEqual([]);
    expect(
      answers.refresh!.filter((status) => status !== 200 && status !== 503),
      'refreshes',
    ).toEqual([]);
    expect(
      answers.logout!.filter((status) => status !== 204 && status !== 503),
      'logouts',
    ).toEqual([]);
    expect(
      await keysWithoutExpiry(redis, app.prefix),
      `keys left with no expiry by requests cut off after 0, 1 and 2 writes (${JSON.stringify(answers)})`,
    ).toEqual([]);
  });

  it('publishes the current key in the JWKS, and a retired one only during its grace period', async () => {
    const app = await startApp();
    const kids = async () =>
      ((await (await fetch(`${app.url}/.well-known/jwks.json`)).json()) as { keys: JWK[] }).keys.map((k) => k.kid);
    const old = app.keys.current();
    const next = app.keys.rotate();
    expect(await kids()).toEqual([next.kid, old.kid]);
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect(await kids(), 'other services would still trust the retired key').toEqual([next.kid]);
  });
});

describe('baseline: tokens jose refuses by itself (keep it that way)', () => {
  // jose never accepts `none` from jwtVerify, and checks that the key fits the algorithm (an RSA public
  // key is no HMAC secret), so these fail only if code goes around it. Old libraries took the
  // algorithm from the token; these tests keep that door shut.
  it('rejects a token with alg "none"', async () => {
    const { app, tab } = await loggedIn();
    const header = { ...decodeProtectedHeader(tab.accessToken!), alg: 'none' };
    const unsigned = `${base64url(header)}.${base64url(realClaims(app, tab))}.`;
    expect(await meWith(app, unsigned), 'an unsigned token was accepted: anyone could claim to be anyone').toBe(401);
  });

  it('rejects an HS256 token signed with the RS256 public key', async () => {
    const { app, tab } = await loggedIn();
    // The public key is public: anyone can read it from the JWKS and turn it into PEM text.
    const { keys } = (await (await fetch(`${app.url}/.well-known/jwks.json`)).json()) as { keys: JWK[] };
    const jwk = keys[0]!;
    const pem = createPublicKey({ key: jwk as import('node:crypto').webcrypto.JsonWebKey, format: 'jwk' })
      .export({ type: 'spki', format: 'pem' })
      .toString();
    const forged = await new SignJWT(realClaims(app, tab))
      .setProtectedHeader({ ...decodeProtectedHeader(tab.accessToken!), alg: 'HS256', kid: jwk.kid })
      .sign(new TextEncoder().encode(pem));
    expect(await meWith(app, forged), 'a token signed with the public key (HS256) was accepted').toBe(401);
  });

  it('answers a token whose header is nonsense (alg 123, an unknown crit) with a 401 problem, not a 500', async () => {
    const { app, tab } = await loggedIn();
    const header = decodeProtectedHeader(tab.accessToken!);
    const claims = realClaims(app, tab);
    const tokens = {
      'alg 123': signedAsIs(app, { ...header, alg: 123 }, claims),
      'unknown crit': signedAsIs(
        app,
        { ...header, alg: 'RS256', crit: ['x-must-understand'], 'x-must-understand': 1 },
        claims,
      ),
    };
    for (const [name, token] of Object.entries(tokens)) {
      for (const path of ['/me', '/refresh', '/logout']) {
        const res = await fetch(`${app.url}${path}`, {
          method: path === '/me' ? 'GET' : 'POST',
          headers: { authorization: `Bearer ${token}` },
        });
        expect(res.status, `${name} on ${path}`).toBe(401);
        expect(res.headers.get('content-type'), `${name} on ${path}`).toMatch(/^application\/problem\+json/);
        await res.arrayBuffer();
      }
    }
  });
});

describe('challenges: refresh tokens', () => {
  it('challenge: the refresh token travels in an httpOnly, Secure, SameSite cookie scoped to /refresh', async () => {
    const { tab } = await loggedIn();
    const cookie = tab.jar.cookie;
    expect(cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    const attributes = cookie!.attributes.map((a) => a.toLowerCase());
    expect(attributes).toEqual(expect.arrayContaining(['httponly', 'secure', 'samesite=strict', 'path=/refresh']));
    // The browser drops it when the session could not be refreshed anyway, not later.
    const maxAge = Number(attributes.find((a) => a.startsWith('max-age='))?.slice(8));
    expect(maxAge, 'Max-Age, in seconds, at most refreshTtlSec').toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(TOKEN_DEFAULTS.refreshTtlSec);
    expect(tab.jar.headerFor('/me'), 'the cookie must not travel with every request').toBeUndefined();
  });

  it("challenge: the session survives past the access token's expiry through /refresh", async () => {
    const { app, tab } = await loggedIn();
    for (let day = 0; day < 3; day++) {
      app.clock.advance(PAST_ACCESS_EXPIRY);
      expect(await tab.me(), 'the access token should have expired').toBe(401);
      tab.accessToken = undefined; // the page reloads: the token in memory is gone, the cookie stays
      const refreshed = await tab.refresh();
      expect(refreshed.status, `refresh after expiry: ${JSON.stringify(refreshed.json)}`).toBe(200);
      expect(await tab.me()).toBe(200);
    }
  });

  it('challenge: a replayed refresh token gets a 401 and revokes the whole family', async () => {
    const { app, tab } = await loggedIn();
    const stolen = new Tab(app.url); // the thief copied the cookie, not the access token
    stolen.jar.cookie = tab.jar.cookie;
    expect(stolen.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    const copy = stolen.jar.cookie;
    expect((await tab.refresh()).status).toBe(200); // the user rotates it
    // The thief tries a second later, inside the racing-tabs grace (where a thief looks like a racing tab,
    // so its answer is not checked), then again with the same copy just after the grace ends. The grace
    // runs from the rotation: a request inside it must not move it on, or whoever keeps replaying the
    // copy every few seconds is handed fresh tokens for as long as the user leaves the session idle.
    app.clock.advance(1000);
    await stolen.refresh();
    stolen.jar.cookie = copy;
    app.clock.advance(TOKEN_DEFAULTS.refreshRaceGraceMs);
    const replay = await stolen.refresh();
    expect(
      replay.status,
      'the copy, replayed again as the grace counted from the rotation ends (a racing request must not extend it)',
    ).toBe(401);
    expect(replay.json, 'the replay is named as such').toMatchObject({
      code: 'reused',
      detail: expect.stringMatching(/\w/),
    });
    // Thief or user: the server cannot tell, so the whole family is gone, the user's newest token too.
    app.clock.advance(PAST_ACCESS_EXPIRY);
    const after = await tab.refresh();
    expect(after.status).toBe(401);
    expect(after.json, "the user's newest token, once the family is revoked").toMatchObject({
      code: 'revoked',
      detail: expect.stringMatching(/\w/),
    });
  });

  it('challenge: logout revokes the session, even once the access token has expired', async () => {
    const { app, tab } = await loggedIn();
    const idle = new Tab(app.url); // a second browser, about to sit idle past its access token's expiry
    expect((await idle.login(grace.username, grace.password)).status).toBe(200);
    // Another tab sent the login's cookie just as this one refreshed: inside the racing-tabs grace that
    // copy would be answered with the current token. Then the user logs out.
    const racing = tab.jar.cookie;
    expect((await tab.refresh()).status, 'a refresh just before logging out').toBe(200);
    const copied = tab.jar.cookie;
    const out = await tab.send('POST', '/logout');
    expect(out.status).toBe(204);
    expect(copied, 'login set no refresh_token cookie to revoke (issue() returned no refreshToken)').toBeDefined();
    expect(tab.jar.cookie, 'logout should clear the cookie').toBeUndefined();
    // The racing tab's request lands a second after the logout, still inside the grace: a revoked
    // family answers nobody, not even a racing tab (else it hands out a fresh access token after logout).
    tab.jar.cookie = racing;
    app.clock.advance(1000);
    expect((await tab.refresh()).status, 'the previous generation, within the grace, after logout').toBe(401);
    // Someone who copied the refresh cookie (and the access token) earlier tries to carry on.
    tab.jar.cookie = copied;
    app.clock.advance(MINUTE);
    expect((await tab.refresh()).status, 'the session lived on after logout').toBe(401);

    // The idle user's access token has expired, yet it still names the session that must end.
    const idleCookie = idle.jar.cookie;
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await idle.send('POST', '/logout')).status, 'logout with an expired access token').toBe(204);
    idle.jar.cookie = idleCookie;
    expect((await idle.refresh()).status, 'the session lived on after logout with an expired access token').toBe(401);
  });

  it('challenge: an access token, even a valid one, cannot refresh a session: /refresh without the cookie is a 401', async () => {
    // Access tokens travel with every request and sit in page memory, where an XSS can read them. If
    // one could be exchanged for a fresh one, a stolen access token would live as long as the thief
    // keeps exchanging it. Only the refresh cookie (httpOnly, sent to /refresh alone) extends a session.
    const { app, tab } = await loggedIn();
    for (const age of ['fresh', 'expired']) {
      if (age === 'expired') app.clock.advance(PAST_ACCESS_EXPIRY);
      const res = await fetch(`${app.url}/refresh`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tab.accessToken}` },
      });
      const body = (await res.json()) as { accessToken?: string };
      recordCredential(body.accessToken, 'an access token');
      expect(res.status, `/refresh with a ${age} access token and no cookie`).toBe(401);
    }
  });

  it('challenge: an old refresh token cannot be edited into a current one: changed numbers are refused', async () => {
    // A thief holds a copy from before two rotations. Whatever the token names in the clear (a counter,
    // a timestamp), changing it must not make it valid: the server's tag has to cover every part.
    const { app, tab } = await loggedIn();
    const old = tab.jar.cookie?.value;
    expect(old, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    for (let r = 0; r < 2; r++) {
      app.clock.advance(PAST_ACCESS_EXPIRY);
      expect((await tab.refresh()).status, `rotation ${r + 1}`).toBe(200);
    }
    app.clock.advance(MINUTE);
    // Every run of up to 6 digits, in turn, replaced with 4 down to 0 (the counter a token this young
    // can have). Highest first: a value the counter has passed is a replay, which may end the session
    // before the current value is tried; one it has not reached yet is only unknown.
    const edits = new Set<string>();
    for (let value = 4; value >= 0; value--)
      for (const match of old!.matchAll(/\d{1,6}/g))
        edits.add(old!.slice(0, match.index) + value + old!.slice(match.index + match[0].length));
    edits.delete(old!);
    const accepted: string[] = [];
    for (const edited of edits) {
      // A 503 (Redis slow on a busy machine) decides nothing: ask again.
      for (let attempt = 0; attempt < 5; attempt++) {
        const res = await fetch(`${app.url}/refresh`, {
          method: 'POST',
          headers: { cookie: `refresh_token=${encodeURIComponent(edited)}` },
        });
        await res.arrayBuffer();
        if (res.status === 200) accepted.push(edited);
        if (res.status !== 503) break;
      }
    }
    expect(accepted, `edited copies of a token two rotations old that refreshed (of ${edits.size} tried)`).toEqual([]);
    // And none of them moved the session on: the user's own token still refreshes.
    app.clock.advance(MINUTE);
    let user = await tab.refresh();
    for (let attempt = 0; attempt < 5 && user.status === 503; attempt++) user = await tab.refresh();
    expect(user.status, 'the user refreshes after the edited copies were tried').toBe(200);
  });

  it('challenge: an instance without a configured refreshSecret tags with a random one of its own: no other instance, nor a guessable secret, makes a token it accepts', async () => {
    // A fallback secret written in the source ("a dev default"), derived from what a deployment shows
    // (its key prefix, its issuer) or left empty is the same in every process that runs the code, so
    // anyone who reads the code can tag a refresh token, or look one up. Three instances share one
    // Redis keyspace, as the instances of a deployment would: A and B with no secret configured (each
    // must then make a random one), C with a secret of its own. Any secret that is not the configured
    // one or freshly random shows as one of them accepting another's token, whether the secret tags
    // the token or keys a hash of it stored in Redis (B finds what A stored under the same key).
    expect(
      lab.context.config.REFRESH_SECRET,
      'REFRESH_SECRET is set in this environment, so no instance here runs without a secret: unset it',
    ).toBeUndefined();
    const a = await startAppOn(lab, { redis, users, refreshSecret: undefined });
    const instances = {
      'A (no secret configured)': a,
      'B (no secret configured)': await startTwin(lab, a),
      'C (a secret of its own)': await startTwin(lab, a, { refreshSecret: randomBytes(32).toString('base64url') }),
    };
    const tabs = Object.entries(instances).map(([name, app]) => ({ name, tab: new Tab(app.url) }));
    for (const { name, tab } of tabs) {
      expect((await tab.login(ada.username, ada.password)).status, `login at ${name}`).toBe(200);
      expect(tab.jar.cookie, `login at ${name} set no refresh_token cookie`).toBeDefined();
    }
    /** The status of a refresh with `token` at `url`; a 503 (Redis slow on a busy machine) is asked again. */
    const refreshAt = async (url: string, token: string) => {
      let res: Response | undefined;
      for (let attempt = 0; attempt < 5 && (!res || res.status === 503); attempt++) {
        res = await fetch(`${url}/refresh`, {
          method: 'POST',
          headers: { cookie: `refresh_token=${encodeURIComponent(token)}` },
        });
        recordCredential(((await res.json()) as { accessToken?: string }).accessToken, 'an access token');
      }
      return res!.status;
    };
    // Secrets someone who read the code or the configuration would try first. The solution's tag is an
    // HMAC-SHA256 of what precedes it: the same token with the tag remade under each guess.
    const [first] = tabs;
    const token = first!.tab.jar.cookie!.value;
    const body = token.slice(0, token.lastIndexOf('.'));
    const guesses = ['', a.prefix, lab.context.prefix, TOKEN_DEFAULTS.issuer, TOKEN_DEFAULTS.audience, 'secret'];
    guesses.push('changeme', 'dev', 'refresh-secret', 'jwt-refresh-tokens', 'backend-labs');
    const forged: string[] = [];
    for (const guess of guesses) {
      const tag = createHmac('sha256', guess).update(body).digest('base64url');
      if ((await refreshAt(a.url, `${body}.${tag}`)) !== 401) forged.push(JSON.stringify(guess));
    }
    expect(forged, `guessed secrets that tagged a refresh token A accepted (of ${guesses.length} tried)`).toEqual([]);
    const accepted: string[] = [];
    for (const from of tabs)
      for (const [to, app] of Object.entries(instances))
        if (from.name !== to && (await refreshAt(app.url, from.tab.jar.cookie!.value)) !== 401)
          accepted.push(`${from.name}'s token refreshed at ${to}`);
    expect(accepted, 'refresh tokens one instance made that another accepted (of 6 tried)').toEqual([]);
    // The tokens were genuine, and nothing above ended a session: each refreshes where it was made.
    for (const { name, tab } of tabs) {
      let own = await tab.refresh();
      for (let attempt = 0; attempt < 5 && own.status === 503; attempt++) own = await tab.refresh();
      expect(own.status, `${name}'s own token, refreshed there`).toBe(200);
    }
  });

  it('challenge: logout answers 204 only once the session is revoked: a revocation Redis never got is not a success', async () => {
    // Two instances of one deployment; the logout goes to the second, whose Redis client the test holds
    // and then cuts: every write it tries fails as a dropped connection would. A 503 is honest (the user
    // can log out again); a 204 that left the session alive is a logout that did not happen.
    const app = await startApp();
    const held = await lab.context.redis();
    const hold = holdWrites(held);
    const other = await startTwin(lab, app, { redis: held });
    const tab = new Tab(app.url);
    expect((await tab.login(ada.username, ada.password)).status).toBe(200);
    const copied = tab.jar.cookie;
    expect(copied, 'login set no refresh_token cookie to revoke (issue() returned no refreshToken)').toBeDefined();
    const leaving = new Tab(other.url, tab.jar);
    leaving.accessToken = tab.accessToken;
    hold.hold();
    const out = leaving.send('POST', '/logout');
    try {
      await Promise.race([hold.reached, out]);
    } finally {
      hold.fail();
    }
    const res = await out;
    await res.arrayBuffer();
    expect([204, 503], 'logout while its write fails').toContain(res.status);
    if (res.status === 204) {
      tab.jar.cookie = copied;
      app.clock.advance(MINUTE);
      expect((await tab.refresh()).status, 'logout said 204, yet the session lives on').toBe(401);
    }
  });

  it("challenge: a replay is answered 'reused' only once its family is revoked: a revocation Redis never got is no such answer", async () => {
    // The replay reaches a second instance whose Redis client the test cuts after the request's first
    // writes (none, one, two), as a dropped connection would. A 503 is honest: nothing was decided, and
    // the thief may try again. A 401 "reused" tells the user their session was ended for safety; if the
    // revocation never reached Redis (sent apart from the verdict, its failure ignored), the thief's
    // copy of the session lives on behind that answer.
    const app = await startApp();
    const held = await lab.context.redis();
    const hold = holdWrites(held);
    const other = await startTwin(lab, app, { redis: held });
    const outcomes: { writesFirst: number; replay: string; userAfter: number }[] = [];
    for (const writesFirst of [0, 1, 2]) {
      const tab = new Tab(app.url);
      expect((await tab.login(ada.username, ada.password)).status).toBe(200);
      const thief = new Tab(other.url);
      thief.jar.cookie = tab.jar.cookie;
      expect(thief.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
      app.clock.advance(PAST_ACCESS_EXPIRY);
      expect((await tab.refresh()).status, 'the user rotates the token').toBe(200);
      app.clock.advance(MINUTE); // past the racing-tabs grace: the thief's copy is a replay
      hold.hold(writesFirst);
      const replay = thief.refresh();
      try {
        await Promise.race([hold.reached, replay]); // the replay tried one write more than it was let through
      } finally {
        hold.fail();
      }
      const { status, json } = await replay;
      app.clock.advance(MINUTE);
      outcomes.push({
        writesFirst,
        replay: `${status} ${json.code ?? ''}`.trim(),
        userAfter: (await tab.refresh()).status,
      });
    }
    const wrong = outcomes.filter(
      ({ replay, userAfter }) => !(replay === '503' || (replay === '401 reused' && userAfter === 401)),
    );
    expect(
      wrong,
      `replays cut off after their first writes: each must be a 503, or a 401 "reused" after which the user's newest token is refused too (${JSON.stringify(outcomes)})`,
    ).toEqual([]);
  });

  it("challenge: a refresh token with one character changed or added is refused, and ends nobody's session", async () => {
    // Whatever a refresh token is made of, the server must recognise only what it issued: a changed
    // character is a forgery (its tag, its id or its counter no longer match), refused as invalid, and
    // it must not touch the session it seems to name (else anyone could end sessions by guessing).
    const { app, tab } = await loggedIn();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await tab.refresh()).status, 'rotation 1').toBe(200);
    const current = tab.jar.cookie?.value;
    expect(current, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    const forged: string[] = [];
    // A few positions from the end, where a tag or a random part sits; 'A' and 'g' differ in a high bit
    // of a base64 digit, so the bytes really change.
    for (const fromEnd of [5, 9]) {
      const at = current!.length - fromEnd;
      const swapped = current![at] === 'A' ? 'g' : 'A';
      forged.push(current!.slice(0, at) + swapped + current!.slice(at + 1));
    }
    // The last character, swapped for its neighbour in the base64url alphabet: where a token ends in 32
    // bytes of base64url, the two differ only in a bit that is padding, which a lenient decoder reads as
    // the same bytes. A token is the text the server wrote, not whatever decodes like it.
    const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = current!.at(-1)!;
    forged.push(current!.slice(0, -1) + (BASE64URL[BASE64URL.indexOf(last) ^ 1] ?? 'A'));
    // And the whole token with a character added before or after it: a pattern that finds a token
    // somewhere in the text (no `^`, or no `$`) takes the one inside and accepts text it never issued.
    forged.push(`0${current!}`, `${current!}A`);
    // And a zero put in front of each number that stands alone (after a separator): the same number to
    // Number(), but not the text the server wrote, so "1" and "01" would both be the current generation.
    for (const match of current!.matchAll(/(?<=[^A-Za-z0-9])\d/g))
      forged.push(`${current!.slice(0, match.index)}0${current!.slice(match.index)}`);
    for (const [i, token] of forged.entries()) {
      const res = await fetch(`${app.url}/refresh`, {
        method: 'POST',
        headers: { cookie: `refresh_token=${encodeURIComponent(token)}` },
      });
      const body = (await res.json()) as { code?: string };
      expect(
        [res.status, body.code],
        `a refresh token with one character changed or added (forgery ${i + 1} of ${forged.length})`,
      ).toEqual([401, 'invalid']);
    }
    app.clock.advance(MINUTE);
    expect((await tab.refresh()).status, 'the forgeries ended the session they named').toBe(200);
  });

  it('challenge: two tabs refreshing at once both stay logged in', async () => {
    const { app, tab: first } = await loggedIn();
    const second = first.openTab();
    second.accessToken = first.accessToken;
    app.clock.advance(PAST_ACCESS_EXPIRY); // both tabs wake up with an expired access token
    const [a, b] = await Promise.all([first.refresh(), second.refresh()]);
    expect([a.status, b.status], 'both tabs refreshed with the same cookie at once').toEqual([200, 200]);
    expect([await first.me(), await second.me()]).toEqual([200, 200]);
    app.clock.advance(PAST_ACCESS_EXPIRY); // and the session goes on with whatever cookie the browser kept
    expect((await first.refresh()).status).toBe(200);
    expect((await second.refresh()).status).toBe(200);
  });

  it('challenge: a tab that refreshes just after another, with the cookie both had, gets a cookie that keeps the session going', async () => {
    // The order of "two tabs at once", forced: the first tab's refresh is answered, then the second tab,
    // which sent the same cookie before that answer reached the jar, refreshes a second later (inside the
    // racing-tabs grace). The browser keeps the cookie of the last answer, the second tab's: the session
    // must go on with it once the grace is long over, not end as a reuse of the old generation.
    const { app, tab: first } = await loggedIn();
    const second = new Tab(app.url);
    second.jar.cookie = first.jar.cookie;
    expect(second.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await first.refresh()).status, 'the first tab').toBe(200);
    app.clock.advance(1000);
    expect((await second.refresh()).status, 'the second tab, a second later, with the cookie both had').toBe(200);
    first.jar.cookie = second.jar.cookie;
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await first.refresh()).status, 'the session, minutes later, with the cookie the later answer set').toBe(
      200,
    );
  });

  it('challenge: a thief who refreshes at the same moment as the user is still caught afterwards', async () => {
    const { app, tab } = await loggedIn();
    const thief = new Tab(app.url);
    thief.jar.cookie = tab.jar.cookie;
    expect(thief.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    // Inside the racing-tabs grace the server cannot tell the thief from a second tab. It may answer
    // both, but the family must not fork into two live lines: whatever each got is one successor.
    const [user] = await Promise.all([tab.refresh(), thief.refresh()]);
    expect(user.status).toBe(200);
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await tab.refresh()).status, 'the user refreshes as usual').toBe(200);
    app.clock.advance(MINUTE);
    expect((await thief.refresh()).status, "the thief's copy still works: the race forked the family").toBe(401);
    app.clock.advance(MINUTE);
    expect((await tab.refresh()).status, 'the reuse should have revoked the whole family').toBe(401);
  });

  it('challenge: a refresh held up between its read and its write cannot revive a token rotated since', async () => {
    // Two instances of one deployment; the thief's requests reach the second, whose Redis client the
    // test can hold: its writes wait (a GC pause, a slow network) while its reads go through.
    const app = await startApp();
    const held = await lab.context.redis();
    const hold = holdWrites(held);
    const stalled = await startTwin(lab, app, { redis: held });
    const tab = new Tab(app.url);
    expect((await tab.login(ada.username, ada.password)).status).toBe(200);
    const thief = new Tab(stalled.url);
    thief.jar.cookie = tab.jar.cookie;
    expect(thief.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    hold.hold();
    const late = thief.refresh();
    try {
      await Promise.race([hold.reached, late]); // the thief's refresh has read what it needed, and waits to write
      // Meanwhile the user rotates twice, minutes apart: the thief's copy is two generations old.
      expect((await tab.refresh()).status, 'the user refreshes while the other request waits').toBe(200);
      app.clock.advance(PAST_ACCESS_EXPIRY);
      expect((await tab.refresh()).status, 'and again, minutes later').toBe(200);
    } finally {
      hold.release();
    }
    const statuses = { held: (await late).status, thief: 0, user: 0 };
    app.clock.advance(MINUTE);
    statuses.thief = (await thief.refresh()).status; // with whatever the held request handed out, if anything
    statuses.user = (await tab.refresh()).status;
    expect(
      statuses.thief,
      `the held request wrote a rotation it had decided on before two newer ones, and the thief's line lives on ` +
        `(${JSON.stringify(statuses)}): the check and the write must be one atomic step`,
    ).toBe(401);
  });

  it('challenge: two tabs refreshing a second apart through servers whose clocks are 15 s apart stay logged in', async () => {
    // App servers' clocks drift; Redis's clock is one clock for all of them. These instances get no
    // fake clock, so the token code reads its server's clock, or Redis's. Date is moved between the
    // requests to play two servers, the second 15 s ahead of the first.
    vi.useFakeTimers({ toFake: ['Date'] });
    const base = Date.now();
    const first = await startAppOn(lab, { redis, users, now: undefined, keys: createKeyRing() });
    const second = await startTwin(lab, first);
    const tab = new Tab(first.url);
    expect((await tab.login(ada.username, ada.password)).status).toBe(200);
    expect(tab.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    // The second tab's request leaves before the first one's answer is back, so it carries the same cookie.
    const other = new Tab(second.url);
    other.jar.cookie = tab.jar.cookie;
    vi.setSystemTime(base + PAST_ACCESS_EXPIRY); // on the first server; both access tokens have expired
    const a = await tab.refresh();
    vi.setSystemTime(base + PAST_ACCESS_EXPIRY + 1000 + 15_000); // a second later, on a server 15 s ahead
    const b = await other.refresh();
    expect(
      [a.status, b.status],
      `two honest tabs, one second apart, with servers 15 s apart (the second answered ${JSON.stringify(b.json)})`,
    ).toEqual([200, 200]);
    vi.setSystemTime(base + PAST_ACCESS_EXPIRY + 2000);
    expect((await tab.refresh()).status, 'the session goes on').toBe(200);
  });

  it("challenge: a session's Redis storage stops growing however often it refreshes", async () => {
    const { app, tab } = await loggedIn();
    expect(tab.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    // An open tab refreshes every 5 minutes: 200 refreshes are under a day of one session.
    const stored: Record<number, { keys: number; entries: number }> = {};
    for (let refreshes = 1; refreshes <= 200; refreshes++) {
      app.clock.advance(5 * MINUTE);
      const { status, json } = await tab.refresh();
      if (status !== 200) expect.fail(`refresh ${refreshes} answered ${status}: ${JSON.stringify(json)}`);
      if (refreshes % 100 === 0) stored[refreshes] = await storedEntries(redis, app.prefix);
    }
    expect(
      stored[200],
      `Redis keys and entries (hash fields, set members...) for ONE session: ${JSON.stringify(stored)}; over its ` +
        '14 days a tab would keep ~4,000 records per session. Keep reuse detection, with bounded storage',
    ).toEqual(stored[100]);
  });
});

describe('challenges: what a session leaves in Redis, and for how long', () => {
  /**
   * What a Redis dump must not let anyone rebuild or look up a live refresh token with: the token, each
   * of its parts long enough to be a secret (16 characters) that the access token does not disclose
   * anyway (a session id in `sid` is no secret), and an unkeyed digest (SHA-256, SHA-1) of any of
   * those, in hex, base64 or base64url. A keyed hash (an HMAC with the server's secret) is none of them.
   */
  function secretForms(refreshToken: string, accessToken: string) {
    const forms = refreshSecrets(refreshToken, Object.values(decodeJwt(accessToken)).map(String));
    for (const { value, what } of [...forms])
      for (const algorithm of ['sha256', 'sha1'])
        for (const encoding of ['hex', 'base64', 'base64url'] as const)
          forms.push({
            value: createHash(algorithm).update(value).digest(encoding),
            what: `${what}, as an unkeyed ${algorithm} in ${encoding}`,
          });
    return forms;
  }

  it('challenge: a session Redis has already let expire stays gone: logging out of it or refreshing it writes nothing that lives for ever', async () => {
    // Redis drops an idle session by itself (its expiry), while the browser still holds both tokens;
    // the user then logs out, or a tab refreshes. A write that runs whether or not the session is still
    // there (an HSET of "revoked" on a missing key, say) creates the key again, now with no expiry: one
    // immortal key per such logout.
    const { app, tab } = await loggedIn();
    const cookie = tab.jar.cookie;
    const stored = await redis.keys(`${app.prefix}*`);
    expect(stored.length, 'the session kept nothing in Redis under the token code prefix').toBeGreaterThan(0);
    await redis.del(...stored); // what Redis's own expiry does to an idle session
    const out = await tab.send('POST', '/logout');
    expect(out.status, 'logout of a session Redis has dropped').toBeLessThan(500);
    tab.jar.cookie = cookie;
    const refreshed = await tab.refresh();
    expect(refreshed.status, 'a refresh of a session Redis has dropped').toBe(401);
    // Refused with its reason, as every 401 here is: a code that sends the client to the login (the
    // server cannot tell a dropped session from one it never had: invalid, or expired, or revoked).
    expect(refreshed.json, 'the refusal of a dropped session').toMatchObject({
      code: expect.stringMatching(/^(invalid|expired|revoked)$/),
      detail: expect.stringMatching(/\w/),
    });
    expect(await keysWithoutExpiry(redis, app.prefix), 'keys written for a dropped session, kept for ever').toEqual([]);
    // The same, with Redis dropping the session while the request is on its way: a logout, then a refresh,
    // reach a second instance whose writes the test holds; the session goes while the first write waits.
    // "Check that it exists, then write" in two round trips writes into the gap and creates the key again.
    const held = await lab.context.redis();
    const hold = holdWrites(held);
    const other = await startTwin(lab, app, { redis: held });
    const immortal: string[] = []; // each request's keys left without an expiry, looked for before the next one
    for (const path of ['/logout', '/refresh']) {
      const late = new Tab(app.url);
      expect((await late.login(ada.username, ada.password)).status).toBe(200);
      const there = new Tab(other.url, late.jar);
      there.accessToken = late.accessToken;
      hold.hold();
      const sent = there.send('POST', path);
      try {
        await Promise.race([hold.reached, sent]); // the request's first write waits
        await redis.del(...(await redis.keys(`${app.prefix}*`))); // and Redis lets the session expire meanwhile
      } finally {
        hold.release();
      }
      const res = await sent;
      await res.arrayBuffer();
      for (const key of await keysWithoutExpiry(redis, app.prefix)) immortal.push(`${path} (${res.status}): ${key}`);
    }
    expect(immortal, "keys written for a session Redis dropped between the request's read and its write").toEqual([]);
  });

  it('challenge: every stored credential is a keyed hash: no refresh secret, nor an unkeyed digest of one, in Redis', async () => {
    // A copy of Redis (a backup, a replica, a support dump) must not be a set of live sessions.
    const { app, tab } = await loggedIn();
    const other = new Tab(app.url);
    expect((await other.login(grace.username, grace.password)).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      app.clock.advance(PAST_ACCESS_EXPIRY);
      expect((await tab.refresh()).status, 'refresh after the access token expired').toBe(200);
    }
    for (const session of [tab, other]) {
      expect(session.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
      const forms = secretForms(session.jar.cookie!.value, session.accessToken!);
      expectNoCredentialAtRest(await credentialsInRedis(redis, app.prefix, forms));
    }
  });

  it('challenge: a refresh token is refused once refreshTtlSec has passed without a refresh', async () => {
    const { app, tab } = await loggedIn();
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await tab.refresh()).status, 'refresh after the access token expired').toBe(200);
    const cookie = tab.jar.cookie;
    // Idle for the whole refresh lifetime, and a minute: the session is over (the fake clock moves;
    // Redis's own expiry, in real time, has not come yet, so the token code must check the time itself).
    // At the very moment refreshTtlSec is up, it is over already (as the cookie's Max-Age is).
    app.clock.advance(TOKEN_DEFAULTS.refreshTtlSec * 1000);
    tab.jar.cookie = cookie; // a browser would have dropped it (Max-Age); a thief's copy has no Max-Age
    const atTheMoment = await tab.refresh();
    expect(atTheMoment.status, `a refresh exactly ${TOKEN_DEFAULTS.refreshTtlSec} s after the last one`).toBe(401);
    app.clock.advance(MINUTE);
    tab.jar.cookie = cookie;
    const late = await tab.refresh();
    expect(late.status, `a refresh ${TOKEN_DEFAULTS.refreshTtlSec} s and a minute after the last one`).toBe(401);
    expect(late.json).toMatchObject({ code: 'expired', detail: expect.stringMatching(/\w/) });
  });

  it('challenge: everything a session keeps in Redis expires, within refreshTtlSec of its last use', async () => {
    // Redis deletes an idle session by itself, or it keeps every session ever opened. A logged-out or
    // revoked family may stay a while (to recognise a replay), but not for ever either.
    const { app, tab } = await loggedIn();
    const replayed = new Tab(app.url);
    replayed.jar.cookie = tab.jar.cookie;
    const loggedOut = new Tab(app.url);
    expect((await loggedOut.login(grace.username, grace.password)).status).toBe(200);
    app.clock.advance(PAST_ACCESS_EXPIRY);
    expect((await tab.refresh()).status).toBe(200);
    app.clock.advance(MINUTE); // past any racing-tabs grace
    expect((await replayed.refresh()).status, 'a replayed token revokes the family').toBe(401);
    expect((await loggedOut.send('POST', '/logout')).status).toBe(204);
    const keys = await redis.keys(`${app.prefix}*`);
    expect(keys.length, 'the sessions left nothing in Redis under the token code prefix').toBeGreaterThan(0);
    expect(await keysWithoutExpiry(redis, app.prefix), 'keys kept for ever').toEqual([]);
    const ttls = await Promise.all(
      keys.map(async (key) => ({ key: key.slice(app.prefix.length), ms: await redis.pttl(key) })),
    );
    const limit = TOKEN_DEFAULTS.refreshTtlSec * 1000;
    expect(
      ttls.filter((t) => t.ms > limit),
      `keys that outlive refreshTtlSec (${limit} ms)`,
    ).toEqual([]);
  });

  it('challenge: a session in use outlives refreshTtlSec from its login: each refresh renews its lifetime in Redis too', async () => {
    // Redis's clock, not a fake one: what is checked is the expiry Redis itself applies. Sessions here
    // live 3 s unused; a tab refreshes every 2 s, so it is never idle for 3 s, yet its session is 4 s
    // old at the end. An expiry set at login and never renewed ends it at 3 s, however busy it is.
    const first = await startAppOn(lab, { redis, users, now: undefined, keys: createKeyRing(), refreshTtlSec: 3 });
    const tab = new Tab(first.url);
    expect((await tab.login(ada.username, ada.password)).status).toBe(200);
    expect(tab.jar.cookie, 'login set no refresh_token cookie (issue() returned no refreshToken)').toBeDefined();
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      statuses.push((await tab.refresh()).status);
    }
    expect(statuses, 'refreshes 2 s and 4 s after login, each within 3 s of the one before').toEqual([200, 200]);
  });

  it('challenge: the racing-tabs grace covers only the generation just rotated: an older one revokes the family', async () => {
    // Two tabs racing present the same token, one rotation apart. A token two or more rotations old,
    // even within the grace, is a copy someone kept: the thief. One second after the rotation to
    // generation 2 (and 3), generation 0 must be refused, and the whole family revoked.
    for (const rotations of [2, 3]) {
      const { app, tab } = await loggedIn();
      const thief = new Tab(app.url);
      thief.jar.cookie = tab.jar.cookie; // generation 0
      app.clock.advance(PAST_ACCESS_EXPIRY);
      const racing = new Tab(app.url); // a tab that will send the generation just rotated
      for (let r = 1; r <= rotations; r++) {
        racing.jar.cookie = tab.jar.cookie;
        expect((await tab.refresh()).status, `rotation ${r}`).toBe(200);
      }
      app.clock.advance(1000);
      const stale = await thief.refresh();
      expect(stale.status, `generation 0, 1 s after the rotation to generation ${rotations}`).toBe(401);
      // Still inside the grace, the generation just rotated would be a racing tab's; but the family is
      // revoked now, and a revoked family answers nobody.
      const raced = await racing.refresh();
      expect(raced.status, `generation ${rotations - 1}, within the grace, once the family is revoked`).toBe(401);
      app.clock.advance(1000);
      expect((await tab.refresh()).status, 'the reuse should have revoked the whole family').toBe(401);
    }
  });
});

describe('challenges: verifying access tokens', () => {
  it('challenge: an access token a few seconds past its expiry still works (clock skew), up to clockToleranceSec and no further', async () => {
    const { app, tab } = await loggedIn();
    app.clock.advance((ACCESS_TTL_SEC + 10) * 1000); // this server's clock may run ahead of the signer's
    expect(await tab.me(), '10 s past exp, within any sensible clock tolerance').toBe(200);
    app.clock.advance(MINUTE + CLOCK_TOLERANCE_SEC * 1000);
    expect(await tab.me(), 'well past exp and the tolerance').toBe(401);
    // The allowance is a setting, not a number in the code: a deployment whose clocks are kept close
    // sets clockToleranceSec to 5, and a token 10 s past its exp is expired there. (The other apps of
    // this spec allow 30 s, the default, so a tolerance fixed at the default shows only here.)
    const strict = await startAppOn(lab, { redis, users, clockToleranceSec: 5 });
    const user = new Tab(strict.url);
    expect((await user.login(ada.username, ada.password)).status).toBe(200);
    strict.clock.advance((ACCESS_TTL_SEC + 3) * 1000);
    expect(await user.me(), '3 s past exp, with clockToleranceSec 5').toBe(200);
    strict.clock.advance(7000);
    const late = await user.send('GET', '/me');
    expect(late.status, '10 s past exp, with clockToleranceSec 5').toBe(401);
    expect(await late.json()).toMatchObject({ code: 'expired', detail: expect.stringMatching(/\w/) });
  });

  it('challenge: a token signed with our key but for another audience, issuer or type is rejected', async () => {
    const { app, tab } = await loggedIn();
    const header = { ...decodeProtectedHeader(tab.accessToken!), alg: 'RS256' };
    const claims = realClaims(app, tab);
    // Signed with this API's current key and kid: only what the token says about itself differs.
    const sign = (payload: JWTPayload, protectedHeader = header) =>
      new SignJWT(payload).setProtectedHeader(protectedHeader).sign(app.keys.current().privateKey);
    const statuses: Record<string, number> = {
      'nothing changed': await meWith(app, await sign(claims)),
      'aud: another API': await meWith(app, await sign({ ...claims, aud: 'billing-api' })),
      'iss: another issuer': await meWith(app, await sign({ ...claims, iss: 'https://login.partner.example' })),
      'typ: an ID token (JWT)': await meWith(app, await sign(claims, { ...header, typ: 'JWT' })),
      'no exp: a token that never expires': await meWith(app, await sign({ ...claims, exp: undefined })),
    };
    expect(statuses['nothing changed'], 'the honest token, signed again, must still be accepted').toBe(200);
    const accepted = Object.keys(statuses).filter((name) => name !== 'nothing changed' && statuses[name] !== 401);
    expect(accepted, `signed with our key, yet meant for something else, and accepted: ${accepted.join('; ')}`).toEqual(
      [],
    );
  });

  it('challenge: a token signed by a retired key is rejected after the grace period', async () => {
    const { app, tab } = await loggedIn();
    const old = app.keys.current();
    expect(decodeProtectedHeader(tab.accessToken!).kid, 'access tokens must name their signing key (kid)').toBe(
      old.kid,
    );
    app.keys.rotate(); // say the old private key leaked: that is why we rotate
    const forge = () =>
      new SignJWT(realClaims(app, tab))
        .setProtectedHeader({ ...decodeProtectedHeader(tab.accessToken!), alg: 'RS256', kid: old.kid })
        .sign(old.privateKey);
    const signedAtRotation = await forge();
    expect(await meWith(app, await forge()), 'during the grace period the old key still verifies').toBe(200);
    // An honest token the old key signed as it retired lives its whole life: the grace outlasts it.
    app.clock.advance((ACCESS_TTL_SEC - 10) * 1000);
    expect(await meWith(app, signedAtRotation), 'a token signed as its key retired, 10 s before its exp').toBe(200);
    // A second after that token's exp and the skew allowance, the key has no honest token left to check,
    // and the JWKS has stopped listing it (other services no longer trust it): neither may this API. A
    // grace taken from the defaults (300 s tokens) instead of accessTtlSec would still be open here.
    app.clock.advance((10 + CLOCK_TOLERANCE_SEC + 1) * 1000);
    const jwks = (await (await fetch(`${app.url}/.well-known/jwks.json`)).json()) as { keys: JWK[] };
    expect(
      jwks.keys.map((k) => k.kid),
      'the JWKS lists the retired key past its grace',
    ).not.toContain(old.kid);
    const late = await fetch(`${app.url}/me`, { headers: { authorization: `Bearer ${await forge()}` } });
    expect(
      late.status,
      'the retired key still verifies a second after its grace (accessTtlSec + clockToleranceSec), which the JWKS no longer lists',
    ).toBe(401);
    expect(await late.json()).toMatchObject({ code: 'invalid', detail: expect.stringMatching(/\w/) });
    // What a token says about itself cannot reopen the grace: whoever holds the leaked key writes any
    // `iat` they like. One "issued" a second before the retirement, expiring minutes from now, is as
    // forged as the rest; only the verifier's own clock decides when the key's grace is over.
    const backdated = await new SignJWT({ ...realClaims(app, tab), iat: Math.floor(old.retiredAt! / 1000) - 1 })
      .setProtectedHeader({ ...decodeProtectedHeader(tab.accessToken!), alg: 'RS256', kid: old.kid })
      .sign(old.privateKey);
    expect(
      await meWith(app, backdated),
      'a token of the retired key dated before its retirement, after the grace',
    ).toBe(401);
    // Nor may logout take the session from what the retired key signed: that session lives on.
    const out = await fetch(`${app.url}/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await forge()}` },
    });
    await out.arrayBuffer();
    expect(out.status, 'a logout with a token of the retired key, after its grace').toBe(401);
    expect((await tab.refresh()).status, 'the session named by that token, refreshed afterwards').toBe(200);
  });
});
