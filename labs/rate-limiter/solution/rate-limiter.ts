/**
 * SOLUTION: GCRA (the generic cell rate algorithm) in one Lua script, run atomically by Redis.
 *
 * Why GCRA over a sliding-window log or counter:
 * - one key and one number per client (its "theoretical arrival time", TAT), so memory is O(clients),
 *   not O(requests) as in a sliding log;
 * - exact: it enforces "`limit` requests per `windowMs`, with bursts of at most `limit`", with no
 *   boundary where a client gets twice its allowance, and no approximation as in a sliding counter;
 * - it is a token bucket that refills continuously, written as one timestamp instead of (tokens, last).
 *
 * Why a Lua script: the read, the decision and the write happen in one step on the server, so app
 * instances cannot interleave between a read and a write. One round trip per request (EVALSHA).
 *
 * Why the server's clock: app instances' clocks drift; Redis's TIME is one clock for all of them.
 * A test may pass `now` instead, so windows can be crossed without waiting. (Writing after TIME needs
 * effects replication, Redis's default since 5.0 and its only mode since 7.0; on Redis 3.2 to 4 the
 * script would have to call redis.replicate_commands() first.)
 *
 * Redis down or slow: the limiter's connection has a short command timeout and no offline queue
 * (server/redis.ts), so `consume` rejects quickly, and the middleware decides what that means (this lab
 * fails open, see the README). A timeout on the connection costs nothing per request; a timer and a
 * Promise.race around every call would.
 */
import type { Redis } from 'ioredis';
import type { Decision, RateLimiter, RateLimiterOptions } from '../server/limiter.ts';

/**
 * KEYS[1]: the client's TAT key. ARGV: emission interval (µs per request), burst (µs: interval × limit),
 * now (µs, or -1 to read Redis's clock). Returns {allowed, remaining, resetMs, retryAfterMs,
 * retryAfterUs}: the last one exact, for the deny cache, where a millisecond rounded up would be a
 * whole emission interval at 1,000 requests a second.
 * Whole microseconds keep every comparison exact: epoch µs (~1.8e15) fit a double without rounding.
 */
const GCRA_SCRIPT = `
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, 0, math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000), allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((burst - (new_tat - now)) / interval), math.ceil((new_tat - now) / 1000), 0, 0}
`;

/** ioredis client with our script registered as a command (it sends EVALSHA, falling back to EVAL). */
type GcraRedis = Redis & {
  gcra(
    key: string,
    intervalUs: number,
    burstUs: number,
    nowUs: number,
  ): Promise<[number, number, number, number, number]>;
};

/**
 * The most clients a limiter remembers as denied, unless its options say otherwise. Each entry is a
 * few dozen bytes; a flood from more distinct keys than this only costs the oldest entries their
 * shortcut, never correctness.
 */
const MAX_DENIED = 10_000;

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { redis, limit, windowMs, prefix, now, maxDenied = MAX_DENIED } = options;
  // Defining the script again on a client that has it (another limiter on one connection) replaces it
  // with itself.
  redis.defineCommand('gcra', { numberOfKeys: 1, lua: GCRA_SCRIPT });
  const client = redis as GcraRedis;
  // Rounded up, so a fractional interval errs on the strict side (never more than `limit` per window).
  const intervalUs = Math.ceil((windowMs * 1000) / limit);
  const burstUs = intervalUs * limit;
  // Clients Redis has denied, until the moment Redis said they may retry: an abusive client that keeps
  // hammering is answered here, without a round trip (the local shortcut Cloudflare describes). It can
  // only deny, never admit, so it cannot over-admit across instances; it is measured on this process's
  // own clock (durations only), so it never compares against Redis's.
  //
  // The spec allows a limiter without one (the bench counts the calls it saves), so a mutant that only
  // switches it off decides the same: those are the marks below, each on one line and one mutator.
  // Where switching it off shares a mutator with a real mistake on the same line, the line has no mark
  // and the switched-off mutant is listed as a survivor in the README.
  const deniedUntil = new Map<string, { retryAt: number; resetAt: number }>();
  // Stryker disable next-line ArrowFunction: the deny cache switched off (a NaN moment never matches)
  const localNow = now ?? (() => performance.now());

  return {
    async consume(clientId: string): Promise<Decision> {
      const denied = deniedUntil.get(clientId);
      // Stryker disable next-line BlockStatement: the deny cache switched off
      if (denied !== undefined) {
        const at = localNow();
        const wait = Math.ceil(denied.retryAt - at);
        if (wait > 0)
          return { allowed: false, limit, remaining: 0, resetMs: Math.ceil(denied.resetAt - at), retryAfterMs: wait };
        // Stryker disable next-line CallExpression: an expired entry left in place is read as expired again
        deniedUntil.delete(clientId);
      }
      const nowUs = now ? Math.round(now() * 1000) : -1;
      // Taken before asking: Redis decides after this moment, so "denied until sentAt + retryAfter"
      // ends no later than Redis's own answer would change. Measured from the reply's arrival instead,
      // the cache would hold a client back a round trip too long, every time.
      const sentAt = localNow();
      const [allowed, remaining, resetMs, retryAfterMs, retryAfterUs] = await client.gcra(
        `${prefix}gcra:${clientId}`,
        intervalUs,
        burstUs,
        nowUs,
      );
      // An admitted client is not remembered (its retryAfterUs is 0: an entry that has already expired).
      // Stryker disable next-line ConditionalExpression: the deny cache switched off, or fed expired entries
      // Stryker disable next-line EqualityOperator: remembering admitted clients instead: entries already expired
      // Stryker disable next-line BlockStatement: the deny cache switched off
      if (allowed !== 1) {
        // Bounded: past the cap, the oldest entry goes first (a Map iterates in insertion order).
        if (deniedUntil.size >= maxDenied) deniedUntil.delete(deniedUntil.keys().next().value!);
        const exactWaitMs = retryAfterUs / 1000;
        // Stryker disable next-line ArithmeticOperator: a retry moment already past is no cache
        const retryAt = sentAt + exactWaitMs;
        // Stryker disable next-line CallExpression: the deny cache switched off
        // Stryker disable next-line ObjectLiteral: an entry without moments never matches (NaN)
        deniedUntil.set(clientId, { retryAt, resetAt: sentAt + resetMs });
      }
      return { allowed: allowed === 1, limit, remaining, resetMs, retryAfterMs };
    },
  };
}
