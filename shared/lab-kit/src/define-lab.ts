/**
 * A lab describes its server once, with {@link defineLab}: the services it needs, its configuration,
 * and how to build its app from them. `lab serve`, the spec and the load script all start it through
 * {@link openLab} / {@link startLab}, so none of them repeats start-up, teardown or config parsing.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { RequestListener } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getCallSites } from 'node:util';
import type { Redis, RedisOptions } from 'ioredis';
import type pg from 'pg';
import type { z } from 'zod';
import {
  createPgPool,
  createRedisClient,
  deleteByPrefix,
  dropDatabase,
  ensureDatabase,
  resolveService,
} from '@labs/services';
import { readConfig } from './input.ts';
import { labDirOf, slugOf } from './manifest.ts';
import { atMostEvery } from './problem.ts';
import { type Attach, type Listening, listen } from './server.ts';

/** Which implementation of the learner's file is running. */
export type LabTarget = 'starter' | 'solution';

/** Why a lab is started: names and clean-up follow from it. */
export type Purpose = 'serve' | 'bench' | 'test';

/**
 * The target this process runs: `LAB_TARGET=solution` (set by the command line and the vitest config,
 * beside the `lab-solution` import condition that switches the file itself), else the starter.
 */
export function currentTarget(): LabTarget {
  return process.env.LAB_TARGET === 'solution' ? 'solution' : 'starter';
}

/** A short random name part; unique enough across parallel test files and re-runs. */
export function uniqueId(): string {
  return `${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
}

/** What a lab's `build` gets: its configuration and the services, scoped to this one start. */
export interface LabContext<Config> {
  readonly slug: string;
  readonly config: Config;
  readonly target: LabTarget;
  readonly purpose: Purpose;
  /**
   * The Redis key prefix of this start: `labs:<slug>:serve:` for `lab serve` (kept, so a restart finds
   * its data), `labs:<slug>:<test|bench>:<id>:` otherwise (deleted when the lab closes).
   */
  readonly prefix: string;
  /**
   * A new Redis client, ready to use, closed when the lab closes: on the resolved server, or on `url`
   * (a proxy a spec put in front of it, say).
   */
  redis(options?: RedisOptions & { url?: string }): Promise<Redis>;
  /**
   * A pool on this start's own database (`labs_<slug>` for serve, kept; a unique one otherwise,
   * dropped when the lab closes), created if absent. On the embedded engine, its one database.
   * A connection that dies, even one checked out for a transaction, fails its queries and is logged
   * (one line every 5 s); it never kills the process.
   */
  database(options?: pg.PoolConfig): Promise<pg.Pool>;
  /**
   * Starts an app on a free port (the spec's and load script's extra instances); closed with the lab.
   * Given what `build` returned, its `attach` step is wired to the server too.
   */
  listen(app: RequestListener | BuiltLab, port?: number): Promise<Listening>;
  /** Runs `fn` when the lab closes, after its servers stopped; the last registered runs first. */
  onClose(fn: () => Promise<unknown> | unknown): void;
  /**
   * What `make` gives, made by the first call with `key` and shared by every app built on this context,
   * as one deployment's processes share its database (tables made once, like a migration, however many
   * instances a spec starts). A `make` that fails is made again by the next call.
   */
  once<T>(key: string, make: () => Promise<T>): Promise<T>;
}

/** What `build` returns. */
export interface BuiltLab {
  /** The API: an Express app or any request listener. */
  app: RequestListener;
  /**
   * What the lab adds to the server the app runs on (a WebSocket upgrade handler, say), called once it
   * listens; the step it returns runs when the server closes, before its connections are cut.
   */
  attach?: Attach;
  /** Lines `lab serve` prints under the URL: what to try with curl. */
  usage?(url: string): string[];
}

/** A lab's self-description. `Options` are what a spec or load script may pass to `build`. */
export interface LabDefinition<Config = Record<string, never>, Options = Record<string, never>> {
  /**
   * The lab's folder name: its key prefix and database names start from it. Leave it out: defineLab
   * reads it from the name of the package the definition lives in (`@labs/<slug>`), where it is said
   * once. (Its title, services and hints are in that package.json's manifest too.)
   */
  slug?: string;
  /** The environment variables it reads, as a zod object schema (PORT is the command line's). */
  config?: z.ZodType<Config>;
  build(context: LabContext<Config>, options: Partial<Options>): Promise<BuiltLab> | BuiltLab;
}

/** A definition as {@link defineLab} returns it: its slug known. */
export interface DefinedLab<Config = Record<string, never>, Options = Record<string, never>>
  extends LabDefinition<Config, Options> {
  readonly slug: string;
}

/**
 * Declares a lab. The types follow from what it is given: `Config` from the `config` schema's output,
 * `Options` from the type `build` gives its second parameter (`options: Partial<MyOptions>`), so a lab
 * names neither. The slug, when not given, is the name of the package that holds the calling module.
 */
export function defineLab<Config = Record<string, never>, Options = Record<string, never>>(
  definition: LabDefinition<Config, Options>,
): DefinedLab<Config, Options> {
  return { ...definition, slug: definition.slug ?? slugOfCaller() };
}

/** The slug of the lab whose module called defineLab: its package.json's name, without `@labs/`. */
function slugOfCaller(): string {
  const here = import.meta.filename;
  // The first frame outside this file is the lab's module (its server/lab.ts); under vitest its path
  // may carry a query, and under Node it is a file: URL.
  const caller = getCallSites()
    .map((site) => site.scriptName)
    .find((name) => name && !name.includes(here) && !name.startsWith('node:'));
  const file = caller?.startsWith('file:') ? fileURLToPath(caller) : caller?.replace(/\?.*$/, '');
  const dir = file ? labDirOf(file) : undefined;
  if (!dir)
    throw new Error(
      `defineLab could not tell which lab it describes (called from ${caller ?? 'an unknown file'}, with no lab package.json above it): give it a slug.`,
    );
  return slugOf((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string }).name);
}

/** How to open a lab. */
export interface OpenOptions {
  purpose?: Purpose;
  /** Where the configuration is read from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

/** A lab's context, open, with a way to close everything it started. */
export interface OpenLab<Config> extends AsyncDisposable {
  readonly context: LabContext<Config>;
  close(): Promise<void>;
}

/**
 * Opens a lab's context without building its app: for a load script or spec that builds several apps
 * (instances, targets) on one set of services. Throws a ConfigError for bad configuration.
 */
export async function openLab<Config, Options>(
  lab: LabDefinition<Config, Options>,
  options: OpenOptions = {},
): Promise<OpenLab<Config>> {
  const purpose = options.purpose ?? 'test';
  // A definition that did not come through defineLab has no slug to fall back on.
  const slug = lab.slug;
  if (!slug) throw new Error('This lab has no slug: declare it with defineLab, which reads it from package.json.');
  const config = lab.config ? readConfig(lab.config, options.env) : ({} as Config);
  const kept = purpose === 'serve';
  const id = kept ? '' : uniqueId();
  const prefix = kept ? `labs:${slug}:serve:` : `labs:${slug}:${purpose}:${id}:`;
  const databaseName = `labs_${slug.replaceAll('-', '_')}${kept ? '' : `_${purpose}_${id}`}`;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const servers: Listening[] = [];
  const redisClients: Redis[] = [];
  const made = new Map<string, Promise<unknown>>();
  let database: Promise<{ serverUrl: string; own: boolean }> | undefined;
  // A database restart or a reset breaks every connection of every pool at once: one line says it.
  const connectionLost = atMostEvery(5000, (error: Error, skipped: number) =>
    console.error(
      `[${slug}] a database connection failed: ${error.message}${skipped ? ` (${skipped} more since the last line)` : ''}`,
    ),
  );

  const context: LabContext<Config> = {
    slug,
    config,
    target: currentTarget(),
    purpose,
    prefix,
    async redis({ url: at, ...redisOptions } = {}) {
      const url = at ?? (await resolveService('redis')).url;
      const client = createRedisClient(url, redisOptions);
      client.on('error', () => {}); // it reconnects by itself; commands report failures as they happen
      redisClients.push(client);
      if (client.status !== 'ready') await waitReady(client);
      return client;
    },
    async database(poolOptions) {
      database ??= (async () => {
        const svc = await resolveService('postgres');
        if (svc.provider === 'embedded') return { serverUrl: svc.url, own: false };
        return { serverUrl: await ensureDatabase(svc.url, databaseName), own: !kept };
      })();
      const { serverUrl } = await database;
      // Every client of the pool, idle or checked out, has an error listener for its whole life.
      const pool = createPgPool(serverUrl, poolOptions, connectionLost);
      cleanups.push(() => pool.end());
      return pool;
    },
    async listen(app, port) {
      const server = typeof app === 'function' ? await listen(app, port) : await listen(app.app, port, app.attach);
      servers.push(server);
      return server;
    },
    onClose(fn) {
      cleanups.push(fn);
    },
    once<T>(key: string, make: () => Promise<T>) {
      if (!made.has(key)) {
        const value = make();
        value.catch(() => made.delete(key)); // a failed attempt is made again by the next call
        made.set(key, value);
      }
      return made.get(key) as Promise<T>;
    },
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await Promise.allSettled(servers.map((s) => s[Symbol.asyncDispose]()));
      for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch(() => undefined);
      // Any client that is still connected will do (a test may have closed the first on purpose).
      const ready = redisClients.find((c) => c.status === 'ready');
      if (!kept && ready) await deleteByPrefix(ready, prefix).catch(() => 0);
      await Promise.allSettled(redisClients.map((c) => c.quit().catch(() => c.disconnect())));
      if (database) {
        const { own } = await database.catch(() => ({ own: false }));
        if (own) {
          const svc = await resolveService('postgres');
          await dropDatabase(svc.url, databaseName).catch(() => undefined);
        }
      }
    })());
  return { context, close, [Symbol.asyncDispose]: close };
}

/** A lab's app, built and listening. */
export interface RunningLab<Config> extends OpenLab<Config> {
  readonly url: string;
  /** What `lab serve` prints under the URL. */
  readonly usage: string[];
}

/**
 * Opens the lab, builds its app with `options` and starts it on `port` (default: any free port).
 * Everything is closed again if any step fails.
 */
export async function startLab<Config, Options>(
  lab: LabDefinition<Config, Options>,
  options: OpenOptions & { port?: number; with?: Partial<Options> } = {},
): Promise<RunningLab<Config>> {
  const opened = await openLab(lab, options);
  try {
    const built = await lab.build(opened.context, options.with ?? {});
    const server = await opened.context.listen(built, options.port);
    return { ...opened, url: server.url, usage: built.usage?.(server.url) ?? [] };
  } catch (error) {
    await opened.close();
    throw error;
  }
}

/** Resolves once `client` is ready; rejects after 5 s with a message that names Redis. */
async function waitReady(client: Redis): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('Redis did not become ready within 5 s')), 5000);
    client.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
