/**
 * What the spec needs besides the app: a fake clock, an app per test with its own keys and Redis
 * prefix, and a small HTTP client that keeps the refresh cookie the way a browser would.
 */
import type { OpenLab } from '@labs/lab-kit';
import { createKeyRing, type KeyRing } from '../server/keys.ts';
import jwtLab, { type JwtLabConfig, type JwtLabOptions } from '../server/lab.ts';

/** The token settings every test uses, so the numbers below read plainly. */
export const ACCESS_TTL_SEC = 300;
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
}

let appNo = 0;

/**
 * A fresh instance of the lab's app on `lab`'s context, listening until the lab closes: its own fake
 * clock, signing keys and Redis keyspace. `options` adds what the caller shares or controls.
 */
export async function startApp(lab: OpenLab<JwtLabConfig>, options: Partial<JwtLabOptions> = {}): Promise<TestApp> {
  const clock = fakeClock();
  const keys = createKeyRing({ now: clock.now });
  const { app } = await jwtLab.build(lab.context, {
    now: clock.now,
    keys,
    accessTtlSec: ACCESS_TTL_SEC,
    clockToleranceSec: CLOCK_TOLERANCE_SEC,
    prefix: `${lab.context.prefix}${++appNo}:`,
    ...options,
  });
  const { url } = await lab.context.listen(app);
  return { url, clock, keys };
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
    return { status: res.status, json };
  }

  /** POST /refresh; keeps the new access token on success. */
  async refresh(): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await this.send('POST', '/refresh');
    const json = (await res.json()) as Record<string, unknown>;
    if (res.ok) this.accessToken = String(json.accessToken);
    return { status: res.status, json };
  }

  /** GET /me; the status code. */
  async me(): Promise<number> {
    const res = await this.send('GET', '/me');
    await res.arrayBuffer();
    return res.status;
  }
}
