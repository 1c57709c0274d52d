/**
 * What the spec needs besides the app: a fake clock, an app per test with its own keys and Redis
 * prefix (and a second instance of the same deployment when a test needs two), a Redis client whose
 * writes a test can hold, and a small HTTP client that keeps the refresh cookie the way a browser would.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { OpenLab } from '@labs/lab-kit';
import { recordCredential } from '@labs/test-kit';
import { createKeyRing, type KeyRing } from '../server/keys.ts';
import jwtLab, { type JwtLabConfig, type JwtLabOptions } from '../server/lab.ts';

/**
 * The token settings every test uses, so the numbers below read plainly. The access lifetime is NOT the
 * default (300 s): every expiry the spec probes then shows whether the token code honours the option it
 * was given, or quietly uses the default (or any other fixed number) instead.
 */
export const ACCESS_TTL_SEC = 120;
export const CLOCK_TOLERANCE_SEC = 30;
export const MINUTE = 60_000;

export interface FakeClock {
  now(): number;
  advance(ms: number): void;
}

export function fakeClock(start = Date.now()): FakeClock {
  let time = start;
  return {
    now: () => time,
    advance: (ms) => {
      time += ms;
    },
  };
}

export interface TestApp {
  url: string;
  clock: FakeClock;
  keys: KeyRing;
  /** The Redis key prefix of this app's token code: everything it stores starts with it. */
  prefix: string;
  /** What the app was built with, so a second instance of the same deployment can share it. */
  options: Partial<JwtLabOptions>;
}

let appNo = 0;

/**
 * A fresh instance of the lab's app on `lab`'s context, listening until the lab closes: its own fake
 * clock, signing keys, refresh secret and Redis keyspace. `options` adds what the caller shares or
 * controls (`now: undefined` leaves the clocks real: the app server's, and Redis's).
 */
export async function startApp(lab: OpenLab<JwtLabConfig>, options: Partial<JwtLabOptions> = {}): Promise<TestApp> {
  const clock = fakeClock();
  const settings: Partial<JwtLabOptions> = {
    now: clock.now,
    // The JWKS lists a retired key for as long as the token code should trust it, as server/lab.ts sets it up.
    keys: createKeyRing({ now: clock.now, retiredKeyGraceMs: (ACCESS_TTL_SEC + CLOCK_TOLERANCE_SEC) * 1000 }),
    accessTtlSec: ACCESS_TTL_SEC,
    clockToleranceSec: CLOCK_TOLERANCE_SEC,
    prefix: `${lab.context.prefix}${++appNo}:`,
    refreshSecret: randomBytes(32).toString('base64url'),
    ...options,
  };
  const { app } = await jwtLab.build(lab.context, settings);
  const { url } = await lab.context.listen(app);
  return { url, clock, keys: settings.keys!, prefix: settings.prefix!, options: settings };
}

/**
 * Another instance of `first`'s deployment, as a second server behind a load balancer would be: the
 * same clock, signing keys, refresh secret and Redis keyspace; `options` for what differs (its client).
 */
export async function startTwin(
  lab: OpenLab<JwtLabConfig>,
  first: TestApp,
  options: Partial<JwtLabOptions> = {},
): Promise<TestApp> {
  const twin = await startApp(lab, { ...first.options, ...options });
  return { ...twin, clock: first.clock };
}

/** Commands that only read: a hold lets them through. */
const READ_ONLY = new Set(
  (
    'get mget getrange strlen exists type ttl pttl time ping info hget hmget hgetall hexists hlen ' +
    'hkeys hvals smembers sismember scard zscore zrange zrangebyscore zcard lrange llen lindex scan evalsha_ro eval_ro'
  ).split(' '),
);

/** A Redis client whose writes a test can hold back, to freeze one request between its read and its write. */
export interface WriteHold {
  /**
   * From now on, every command that may write (a script, HSET, MULTI...) waits; reads still pass. The
   * first `letThrough` writes still go (default none): to cut a request off after its first writes.
   */
  hold(letThrough?: number): void;
  /** Settles when the first command is held back after the latest `hold()`. */
  reached: Promise<void>;
  /** Sends the held commands, in order, and stops holding. */
  release(): void;
  /** Fails the held commands as a connection cut before they were sent would ("Connection is closed."), and stops holding. */
  fail(): void;
}

/**
 * Makes `client` hold its writes on request: every command goes through `sendCommand` (pipelines,
 * MULTI and scripts too), so a held command is simply sent later. A held command's timeout starts
 * when it is sent. One client can be held, released or failed again and again.
 */
export function holdWrites(client: Redis): WriteHold {
  let holding = false;
  let passing = 0; // writes still to let through before holding
  let open: (fail: boolean) => void = () => {};
  let gate = Promise.resolve(false); // settles with whether the commands held behind it fail
  let signal = () => {};
  const send = client.sendCommand.bind(client);
  const control: WriteHold = {
    reached: new Promise(() => {}),
    hold(letThrough = 0) {
      holding = true;
      passing = letThrough;
      gate = new Promise((resolve) => {
        open = resolve;
      });
      control.reached = new Promise((resolve) => {
        signal = resolve;
      });
    },
    release() {
      holding = false;
      open(false);
    },
    fail() {
      holding = false;
      open(true);
    },
  };
  client.sendCommand = ((command, ...rest) => {
    if (!holding || READ_ONLY.has(command.name.toLowerCase())) return send(command, ...rest);
    if (passing > 0) {
      passing -= 1;
      return send(command, ...rest);
    }
    signal();
    void gate.then((fail) => (fail ? command.reject(new Error('Connection is closed.')) : send(command, ...rest)));
    return command.promise;
  }) as Redis['sendCommand'];
  return control;
}

/**
 * How much an app keeps in Redis: its keys, and their entries (fields of a hash, members of a set or
 * sorted set, items of a list; a string is one).
 */
export async function storedEntries(redis: Redis, prefix: string): Promise<{ keys: number; entries: number }> {
  const pattern = `${prefix.replace(/[*?[\\]/g, '\\$&')}*`;
  let keys = 0;
  let entries = 0;
  for await (const batch of redis.scanStream({ match: pattern, count: 500 }) as AsyncIterable<string[]>) {
    for (const key of batch) {
      keys += 1;
      const type = await redis.type(key);
      if (type === 'hash') entries += await redis.hlen(key);
      else if (type === 'set') entries += await redis.scard(key);
      else if (type === 'zset') entries += await redis.zcard(key);
      else if (type === 'list') entries += await redis.llen(key);
      else if (type === 'stream') entries += await redis.xlen(key);
      else entries += 1;
    }
  }
  return { keys, entries };
}

/** A stored cookie: its value and the path it is sent to. */
interface Cookie {
  value: string;
  path: string;
  attributes: string[];
}

/** A browser's cookie jar, reduced to the refresh cookie. Tabs of one browser share one jar. */
export class CookieJar {
  cookie: Cookie | undefined;

  /** Applies the response's Set-Cookie for `refresh_token`, as a browser would. */
  update(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (pair.slice(0, eq) !== 'refresh_token') continue;
      const value = decodeURIComponent(pair.slice(eq + 1));
      recordCredential(value, 'the refresh cookie');
      const path = attributes.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) ?? '/';
      const expired = attributes.some((a) => /^expires=/i.test(a) && Date.parse(a.slice(8)) <= Date.now());
      this.cookie = value === '' || expired ? undefined : { value, path, attributes };
    }
  }

  /** The Cookie header for a request to `path`, if the cookie's Path covers it. */
  headerFor(path: string): string | undefined {
    const c = this.cookie;
    if (!c || !(path === c.path || path.startsWith(`${c.path}/`))) return undefined;
    return `refresh_token=${encodeURIComponent(c.value)}`;
  }
}

/** One browser tab: its own access token (in memory), the browser's shared cookie jar. */
export class Tab {
  accessToken: string | undefined;
  readonly baseUrl: string;
  readonly jar: CookieJar;

  constructor(baseUrl: string, jar = new CookieJar()) {
    this.baseUrl = baseUrl;
    this.jar = jar;
  }

  /** Another tab of the same browser. */
  openTab(): Tab {
    return new Tab(this.baseUrl, this.jar);
  }

  /** Sends a request with the access token (if any) and the cookie (where its Path allows). */
  async send(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.accessToken) headers.authorization = `Bearer ${this.accessToken}`;
    const cookie = this.jar.headerFor(path);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    this.jar.update(res);
    return res;
  }

  /** POST /login; keeps the access token. Returns the response (body already read into `json`). */
  async login(username: string, password: string): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await this.send('POST', '/login', { username, password });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.ok) this.accessToken = String(json.accessToken);
    recordCredential(this.accessToken, 'an access token');
    return { status: res.status, json };
  }

  /** POST /refresh; keeps the new access token on success. */
  async refresh(): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await this.send('POST', '/refresh');
    const json = (await res.json()) as Record<string, unknown>;
    if (res.ok) this.accessToken = String(json.accessToken);
    recordCredential(this.accessToken, 'an access token');
    return { status: res.status, json };
  }

  /** GET /me; the status code. */
  async me(): Promise<number> {
    const res = await this.send('GET', '/me');
    await res.arrayBuffer();
    return res.status;
  }
}
