/**
 * The WebSocket rooms lab, described once: `lab serve`, the spec and the load script all start it from
 * here. Each build is one instance of the app (its own HTTP server, ws server, room hub and two Redis
 * connections); the spec and the load script build three on one context, as three processes behind a
 * load balancer would run.
 */
import { randomBytes } from 'node:crypto';
import { createRoomHub } from '#room-hub';
import { defineLab, wholeNumber, z } from '@labs/lab-kit';
import { createApp } from './app.ts';
import { whenListening } from './attach.ts';
import { createGateway, WS_PATH } from './gateway.ts';
import { type Every, type HubOptions, type RoomHub, realClock } from './hub.ts';

/** What a spec or load script may set instead of the configuration. */
export interface RoomsLabOptions {
  /** This instance's name (default "a"). */
  instance: string;
  /** Which hub to run (the load script runs the starter and the solution side by side). */
  createHub: (options: HubOptions) => RoomHub;
  /** The heartbeat's clock: the spec passes a manual one. */
  every: Every;
  heartbeatMs: number;
  sendBufferCap: number;
  historyMax: number;
  maxPayload: number;
  tokenSecret: string;
  allowedOrigins: string[];
}

interface RoomsConfig {
  WS_TOKEN_SECRET: string;
  WS_ALLOWED_ORIGINS: string[];
  WS_HEARTBEAT_MS: number;
  WS_SEND_BUFFER_CAP: number;
  WS_HISTORY_MAX: number;
  WS_MAX_PAYLOAD: number;
}

/** A comma-separated list of browser origins, each written as the browser sends it (scheme://host[:port]). */
const origins = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const list = (raw ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const origin of list) {
      if (URL.canParse(origin) && new URL(origin).origin === origin) continue;
      ctx.addIssue({ code: 'custom', message: `must list origins like https://app.example.com, got "${origin}"` });
      return z.NEVER;
    }
    return list;
  });

export default defineLab<RoomsConfig, RoomsLabOptions>({
  slug: 'websocket-rooms',
  config: z.object({
    // Unset: a random key per start, so tokens from an earlier start stop working. Instances that
    // share clients must share the key.
    WS_TOKEN_SECRET: z
      .string()
      .min(32, 'must be at least 32 characters')
      .optional()
      .transform((secret) => secret ?? randomBytes(32).toString('base64url')),
    WS_ALLOWED_ORIGINS: origins,
    WS_HEARTBEAT_MS: wholeNumber({ fallback: 30_000, min: 100, max: 600_000 }),
    WS_SEND_BUFFER_CAP: wholeNumber({ fallback: 1_048_576, min: 16_384, max: 268_435_456 }),
    WS_HISTORY_MAX: wholeNumber({ fallback: 1000, min: 10, max: 10_000_000 }),
    WS_MAX_PAYLOAD: wholeNumber({ fallback: 65_536, min: 1024, max: 16_777_216 }),
  }),
  async build(context, options) {
    const { config } = context;
    const instance = options.instance ?? 'a';
    const tokenSecret = options.tokenSecret ?? config.WS_TOKEN_SECRET;
    const heartbeatMs = options.heartbeatMs ?? config.WS_HEARTBEAT_MS;
    // Named connections: `CLIENT LIST` shows whose they are (and the spec can drop one on purpose).
    const [redis, subscriber] = await Promise.all([
      context.redis({ connectionName: `${context.prefix}${instance}:commands` }),
      context.redis({ connectionName: `${context.prefix}${instance}:subscriber` }),
    ]);
    const hub = (options.createHub ?? createRoomHub)({
      instance,
      redis,
      subscriber,
      prefix: context.prefix,
      heartbeatMs,
      every: options.every ?? realClock,
      sendBufferCap: options.sendBufferCap ?? config.WS_SEND_BUFFER_CAP,
      historyMax: options.historyMax ?? config.WS_HISTORY_MAX,
      tokenSecret,
      allowedOrigins: options.allowedOrigins ?? config.WS_ALLOWED_ORIGINS,
    });
    const gateway = createGateway({ hub, instance, maxPayload: options.maxPayload ?? config.WS_MAX_PAYLOAD });
    const app = createApp({ gateway, tokenSecret, demoLogin: context.purpose === 'serve' });
    const stopLooking = whenListening(app, (server) => gateway.attach(server));
    // Runs after the HTTP server (and with it every WebSocket) has closed.
    context.onClose(async () => {
      stopLooking();
      await hub.close();
    });
    return {
      app,
      usage: (url) => [
        `Page:   ${url}/  (open it in two tabs; "Drop connection" then "Connect" resumes)`,
        `Token:  curl -s '${url}/api/token?user=alice'`,
        `Socket: ${url.replace(/^http/, 'ws')}${WS_PATH}?token=<token>  then send {"type":"join","room":"lobby"}`,
        `Stats:  curl -s ${url}/api/stats`,
        `Heartbeat every ${heartbeatMs} ms; send buffer cap ${options.sendBufferCap ?? config.WS_SEND_BUFFER_CAP} bytes`,
      ],
    };
  },
});
