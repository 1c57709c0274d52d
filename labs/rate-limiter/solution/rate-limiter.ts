/**
 * SOLUTION: GCRA (the generic cell rate algorithm) in one Lua script, run atomically by Redis, asked
 * once per client per turn of the event loop.
 *
 * Why GCRA over a sliding-window log or counter:
 * - one key and one number per client (its "theoretical arrival time", TAT), so memory is O(clients),
 *   not O(requests) as in a sliding log;
 * - exact: it enforces "`limit` requests per `windowMs`, with bursts of at most `limit`", with no
 *   boundary where a client gets twice its allowance, and no approximation as in a sliding counter;
 * - it is a token bucket that refills continuously, written as one timestamp instead of (tokens, last).
 *
 * Why a Lua script: the read, the decision and the write happen in one step on the server, so app
 * instances cannot interleave between a read and a write.
 *
 * Why one call per client per turn: a busy client's requests arrive together (one turn of the event
 * loop handles every socket that was readable), and one script call can decide all of them as well
 * as one: "n asked, the first k fit" is the same arithmetic as "one asked, it fits", and still one
 * atomic step. The rest of the work per request (HTTP, Express) is the same for every limiter, so the
 * round trips saved are what makes this faster than a call per request. The price is none: the batch
 * is sent in the same turn the requests arrived in (setImmediate runs after that turn's I/O), so no
 * request waits for a timer.
 *
 * Why the server's clock: app instances' clocks drift; Redis's TIME is one clock for all of them.
 * A test may pass `now` instead, so windows can be crossed without waiting. (Writing after TIME needs
 * effects replication, Redis's default since 5.0 and its only mode since 7.0; on Redis 3.2 to 4 the
 * script would have to call redis.replicate_commands() first.)
 *
 * Redis down or slow: the limiter's connection has a short command timeout and no offline queue
 * (server/redis.ts), so the script call rejects quickly, every request of the batch is rejected with
 * that error, and the middleware decides what that means (this lab fails open, see the README).
 */
import type { Redis } from 'ioredis';
import type { Decision, RateLimiter, RateLimiterOptions } from '../server/limiter.ts';

/**
 * KEYS[1]: the client's TAT key. ARGV: emission interval (µs per request), burst (µs: interval × limit),
 * now (µs, or -1 to read Redis's clock), how many requests are asking. Admits the first k that fit,
 * k = min(asked, floor((now + burst - tat) / interval)), and pushes the TAT once by k intervals.
 * Returns {k, remaining, resetMs, retryAfterMs, retryAfterUs} as they stand after the k: remaining is
 * what the last admitted request is told, the retry fields what each denied one is told (the last one
 * exact, for the deny cache, where a millisecond rounded up would be a whole emission interval at
 * 1,000 requests a second).
 * Whole microseconds keep every comparison exact: epoch µs (~1.8e15) fit a double without rounding.
 */
const GCRA_SCRIPT = `
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local asked = tonumber(ARGV[4])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local admitted = math.max(0, math.min(asked, math.floor((now + burst - tat) / interval)))
if admitted > 0 then
  tat = tat + admitted * interval
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
local allow_at = tat + interval - burst
return {admitted, math.floor((burst - (tat - now)) / interval), math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000), allow_at - now}
`;

/** ioredis client with our script registered as a command (it sends EVALSHA, falling back to EVAL). */
type GcraRedis = Redis & {
  gcra(
    key: string,
    intervalUs: number,
    burstUs: number,
    nowUs: number,
    asked: number,
  ): Promise<[number, number, number, number, number]>;
};

/** A request waiting for its client's batch to be decided. */
interface Waiting {
  resolve(decision: Decision): void;
  reject(error: unknown): void;
}

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
  // Each client's requests that arrived in this turn of the event loop, in arrival order. One batch per
  // client: a batch is one key in Redis, so two clients' requests never share a decision.
  const batches = new Map<string, Waiting[]>();
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

  /** One script call for `waiting`, the requests `clientId` sent in one turn; every one is answered. */
  function decide(clientId: string, waiting: Waiting[]): void {
    batches.delete(clientId); // requests from the next turn on start a batch of their own
    const nowUs = now ? Math.round(now() * 1000) : -1;
    // Taken before asking: Redis decides after this moment, so "denied until sentAt + retryAfter"
    // ends no later than Redis's own answer would change. Measured from the reply's arrival instead,
    // the cache would hold a client back a round trip too long, every time.
    const sentAt = localNow();
    client
      .gcra(`${prefix}gcra:${clientId}`, intervalUs, burstUs, nowUs, waiting.length)
      .then(([admitted, remaining, resetMs, retryAfterMs, retryAfterUs]) => {
        // The first `admitted` in arrival order are in; each is told what was left after its own turn.
        for (const [i, request] of waiting.entries()) {
          if (i < admitted)
            request.resolve({
              allowed: true,
              limit,
              remaining: remaining + admitted - 1 - i,
              resetMs,
              retryAfterMs: 0,
            });
          else request.resolve({ allowed: false, limit, remaining: 0, resetMs, retryAfterMs });
        }
        // Stryker disable next-line ConditionalExpression: the deny cache switched off, or fed expired entries
        // Stryker disable next-line EqualityOperator: remembering a batch that all fit too: denied until Redis's own moment
        // Stryker disable next-line BlockStatement: the deny cache switched off
        if (admitted < waiting.length) {
          // Bounded: past the cap, the oldest entry goes first (a Map iterates in insertion order).
          // Mutation survivor: made `true` or `<`, the cache keeps one entry; smaller is allowed, and its
          // `false` sibling (no bound at all) is killed, so no mark.
          if (deniedUntil.size >= maxDenied) deniedUntil.delete(deniedUntil.keys().next().value!);
          const exactWaitMs = retryAfterUs / 1000;
          // Stryker disable next-line ArithmeticOperator: a retry moment already past is no cache
          const retryAt = sentAt + exactWaitMs;
          // maxDenied 0 means remember nobody (the eviction above only makes room, and there is none).
          // Mutation survivor: made `false`, the deny cache is switched off (allowed); its `true` and `>=` are killed
          // Stryker disable next-line BlockStatement: the deny cache switched off
          if (maxDenied > 0) {
            // Stryker disable next-line CallExpression: the deny cache switched off
            // Stryker disable next-line ObjectLiteral: an entry without moments never matches (NaN)
            deniedUntil.set(clientId, { retryAt, resetAt: sentAt + resetMs });
          }
        }
      })
      // Redis failed (or a bug threw): every request of the batch gets the error, none is left waiting.
      .catch((error: unknown) => {
        for (const request of waiting) request.reject(error);
      });
  }

  return {
    consume(clientId: string): Promise<Decision> {
      const denied = deniedUntil.get(clientId);
      // Stryker disable next-line BlockStatement: the deny cache switched off
      // Mutation survivor: made `false`, the deny cache is off, a valid limiter; `true` is killed (a crash).
      if (denied !== undefined) {
        const at = localNow();
        const wait = Math.ceil(denied.retryAt - at);
        // Mutation survivor: made `false`, the cache is never answered from; `true` is killed (a wait of 0).
        if (wait > 0)
          return Promise.resolve({
            allowed: false,
            limit,
            remaining: 0,
            resetMs: Math.ceil(denied.resetAt - at),
            retryAfterMs: wait,
          });
        // Stryker disable next-line CallExpression: an expired entry left in place is read as expired again
        deniedUntil.delete(clientId);
      }
      // Batching is, like the deny cache, a saving the spec does not demand (a call per request decides
      // the same; the bench counts the calls): the mutant that only switches it off is marked. The test
      // below made `true` does that too, but `false` is a crash, so that line has no mark.
      let waiting = batches.get(clientId);
      // Mutation survivor: made `true`, every request opens its own batch (batching off, as above).
      if (waiting === undefined) {
        waiting = [];
        // Stryker disable next-line CallExpression: batching switched off (no request finds the batch)
        batches.set(clientId, waiting);
        // After this turn's I/O callbacks, so every request that arrived with this one joins it.
        setImmediate(decide, clientId, waiting);
      }
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
  };
}
