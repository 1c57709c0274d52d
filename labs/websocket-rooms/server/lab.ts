/**
 * The WebSocket rooms lab, described once: `lab serve`, the spec and the load script all start it from
 * here. Each build is one instance of the app (its own HTTP server, ws server, room hub and two Redis
 * connections); the spec and the load script build three on one context, as three processes behind a
 * load balancer would run.
 */
import { createRoomHub } from '#room-hub';
import { defineLab, failFastRedis, secretSetting, wholeNumber, z } from '@labs/lab-kit';
import { createApp } from './app.ts';
import { createGateway, WS_PATH } from './gateway.ts';
import { type HubOptions, type RoomHub, realClock } from './hub.ts';

/** How long one Redis command may take before the frame (or request) waiting on it gives up. */
export const REDIS_COMMAND_TIMEOUT_MS = 1000;

/**
 * Both Redis connections of an instance (commands, subscriber) fail fast (the kit's failFastRedis: a
 * command timeout, no offline queue, no retries). A client that posts a message or joins a room is
 * waiting for an answer: a prompt `unavailable` serves it better than a long silence, and a message its
 * sender was told failed must not be posted behind its back once Redis is back. None of this stops
 * reconnecting: ioredis keeps trying, and subscribes to every channel again by itself
 * (autoResubscribe), so an instance recovers without a restart.
 */
export const ROOMS_REDIS_OPTIONS = failFastRedis(REDIS_COMMAND_TIMEOUT_MS);

/** What a spec or load script may set instead of the configuration; the hub's settings as HubOptions says. */
export interface RoomsLabOptions extends Omit<HubOptions, 'redis' | 'subscriber' | 'prefix'> {
  /** Which hub to run (the load script runs the starter and the solution side by side). */
  createHub: (options: HubOptions) => RoomHub;
  maxPayload: number;
  /**
   * The Redis this instance connects to (default: the one the lab found). The spec points it at a
   * proxy it can stall or kill, to see what clients get while Redis is down or silent.
   */
  redisUrl: string;
  /**
   * The Redis the subscriber connection alone connects to (default: `redisUrl`): the spec gives it a
   * proxy of its own, to bring the subscriber back before the command connection.
   */
  subscriberRedisUrl: string;
  /** Where the gateway reports outages (a line every 5 s at most) and bugs (default: the console). */
  log: (message: string) => void;
}

/** A comma-separated list of browser origins, each written as the browser sends it (scheme://host[:port]). */
const origins = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const list = (raw ?? '').split(',').map((origin) => origin.trim());
    const bad = list.find((origin) => origin && !(URL.canParse(origin) && new URL(origin).origin === origin));
    if (bad === undefined) return list.filter(Boolean);
    ctx.addIssue({ code: 'custom', message: `must list origins like https://app.example.com, got "${bad}"` });
    return z.NEVER;
  });

export default defineLab({
  config: z.object({
    // Unset: a random key per start, so tokens from an earlier start stop working. Instances that
    // share clients must share the key.
    WS_TOKEN_SECRET: secretSetting({ randomIfUnset: true }),
    WS_ALLOWED_ORIGINS: origins,
    WS_HEARTBEAT_MS: wholeNumber({ fallback: 30_000, min: 100, max: 600_000 }),
    WS_SEND_BUFFER_CAP: wholeNumber({ fallback: 1_048_576, min: 16_384, max: 268_435_456 }),
    WS_HISTORY_MAX: wholeNumber({ fallback: 1000, min: 10, max: 10_000_000 }),
    // A day after its last message a room's history goes; a resume after that gets a gap frame.
    WS_HISTORY_TTL_SEC: wholeNumber({ fallback: 86_400, min: 60, max: 2_592_000 }),
    WS_MAX_PAYLOAD: wholeNumber({ fallback: 65_536, min: 1024, max: 16_777_216 }),
  }),
  async build(context, options: Partial<RoomsLabOptions>) {
    const { config } = context;
    const instance = options.instance ?? 'a';
    const tokenSecret = options.tokenSecret ?? config.WS_TOKEN_SECRET;
    const heartbeatMs = options.heartbeatMs ?? config.WS_HEARTBEAT_MS;
    // Named connections: `CLIENT LIST` shows whose they are (and the spec can drop one on purpose).
    const connect = (role: string) => {
      const redisOptions = { ...ROOMS_REDIS_OPTIONS, connectionName: `${context.prefix}${instance}:${role}` };
      const url = role === 'subscriber' ? (options.subscriberRedisUrl ?? options.redisUrl) : options.redisUrl;
      return context.redis({ ...redisOptions, url });
    };
    const [redis, subscriber] = await Promise.all([connect('commands'), connect('subscriber')]);
    const hub = (options.createHub ?? createRoomHub)({
      instance,
      redis,
      subscriber,
      prefix: context.prefix,
      heartbeatMs,
      every: options.every ?? realClock,
      sendBufferCap: options.sendBufferCap ?? config.WS_SEND_BUFFER_CAP,
      historyMax: options.historyMax ?? config.WS_HISTORY_MAX,
      historyTtlSec: options.historyTtlSec ?? config.WS_HISTORY_TTL_SEC,
      tokenSecret,
      allowedOrigins: options.allowedOrigins ?? config.WS_ALLOWED_ORIGINS,
    });
    const gateway = createGateway({
      hub,
      instance,
      maxPayload: options.maxPayload ?? config.WS_MAX_PAYLOAD,
      log: options.log,
    });
    const app = createApp({
      gateway,
      tokenSecret,
      demoLogin: context.purpose === 'serve',
      log: options.log,
      // Both connections: the subscriber can stall on its own (PING is allowed on a subscribed one).
      checkRedis: () => Promise.all([redis.ping(), subscriber.ping()]),
    });
    // Runs after the HTTP server (and with it every WebSocket: attach's step below) has closed.
    context.onClose(() => hub.close());
    return {
      app,
      // The WebSocket endpoint is the server's 'upgrade' event: the kit hands the server over once it listens.
      attach: (server) => gateway.attach(server),
      usage: (url) => [
        `Page:   ${url}/  (open it in two tabs; "Drop connection" then "Connect" resumes)`,
        `Token:  curl -s '${url}/api/token?user=alice'`,
        `Socket: ${url.replace(/^http/, 'ws')}${WS_PATH}?token=<token>  then send {"type":"join","room":"lobby"}`,
        `Stats:  curl -s ${url}/api/stats`,
        `Ready:  curl -si ${url}/ready  (503 with Retry-After while Redis is not answering)`,
        `Heartbeat every ${heartbeatMs} ms; send buffer cap ${options.sendBufferCap ?? config.WS_SEND_BUFFER_CAP} bytes`,
      ],
    };
  },
});
