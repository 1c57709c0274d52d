/**
 * What the spec needs around the learner's pipeline: worker processes to kill for real, the consumer
 * group's committed offsets, and waiting for a condition with a bound instead of sleeping.
 */
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { Admin, ISocketFactory, Kafka, Producer } from 'kafkajs';
import type pg from 'pg';
import { currentTarget } from '@labs/lab-kit';
import { exerciseAliases } from '@labs/test-kit/vitest';
import { type WorkerOptions, type WorkerProcess, startWorker as startWorkerProcess } from '../server/worker-process.ts';

const LAB_DIR = join(import.meta.dirname, '..');

/**
 * The file `#event-pipeline` stands for in this run (the starter, the solution, or the wrong fix under
 * check): a worker process loads the same code the spec imports.
 */
export function pipelineModule(): string {
  const alias = exerciseAliases(LAB_DIR, currentTarget()).find((a) => a.find === '#event-pipeline');
  if (!alias) throw new Error('package.json has no "#event-pipeline" import');
  return alias.replacement;
}

/** Polls `check` every `everyMs` until it returns true; false once `timeoutMs` has passed. */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    // timers/promises, which a test's fake clock (vi.useFakeTimers) leaves running.
    await sleep(everyMs);
  }
}

/** Where a worker of the spec reads and writes. */
export type WorkerTarget = Pick<WorkerOptions, 'databaseUrl' | 'topic' | 'deadLetterTopic' | 'groupId'>;

/** A worker process running the pipeline under test (the same file `#event-pipeline` is in this run). */
export function startWorker(target: WorkerTarget): Promise<WorkerProcess> {
  return startWorkerProcess({ ...target, pipelineModule: pipelineModule() });
}

/** How many members the group has right now (a member that crashed stays until its session times out). */
export async function members(admin: Admin, groupId: string): Promise<number> {
  const { groups } = await admin.describeGroups([groupId]);
  return groups[0]?.members.length ?? 0;
}

/**
 * Counts the crashes of every consumer made from `kafka` from now on: a consumer whose handler keeps
 * throwing gives up after its retries, and kafkajs restarts it. The real client, instrumented from outside.
 */
export function countCrashes(kafka: Kafka): { readonly count: number; readonly last?: string } {
  const seen = { count: 0, last: undefined as string | undefined };
  const original = kafka.consumer.bind(kafka);
  kafka.consumer = (config) => {
    const consumer = original(config);
    consumer.on(consumer.events.CRASH, (event) => {
      seen.count += 1;
      seen.last = event.payload.error.message;
    });
    return consumer;
  };
  return seen;
}

/**
 * What happened to the group membership and the commits of every consumer made from `kafka` from now
 * on: how often one joined its group (GROUP_JOIN), how often kafkajs gave up on one (CRASH, and
 * whether it restarted it), how many commits the code asked for (`consumer.commitOffsets`) and how
 * many of those were refused, with the last reason, and how many had been refused when each join
 * happened. The promise the code gets back rejects as before, so a commit nobody awaits is still a
 * rejection nobody handles. The real client, instrumented from outside.
 */
export function watchConsumers(kafka: Kafka): {
  readonly joins: number;
  readonly crashes: number;
  readonly restarts: number;
  readonly commits: number;
  readonly refusedCommits: number;
  readonly lastRefusal?: string;
  /** `refusedCommits` at each GROUP_JOIN, in order. */
  readonly refusedAtJoins: readonly number[];
} {
  const seen = {
    joins: 0,
    crashes: 0,
    restarts: 0,
    commits: 0,
    refusedCommits: 0,
    lastRefusal: undefined as string | undefined,
    refusedAtJoins: [] as number[],
  };
  const original = kafka.consumer.bind(kafka);
  kafka.consumer = (config) => {
    const consumer = original(config);
    consumer.on(consumer.events.GROUP_JOIN, () => {
      seen.joins += 1;
      seen.refusedAtJoins.push(seen.refusedCommits);
    });
    consumer.on(consumer.events.CRASH, (event) => {
      seen.crashes += 1;
      if (event.payload.restart) seen.restarts += 1;
    });
    const commit = consumer.commitOffsets.bind(consumer);
    consumer.commitOffsets = (offsets) => {
      seen.commits += 1;
      return commit(offsets).catch((error: Error) => {
        seen.refusedCommits += 1;
        // kafkajs' wrapper, and the broker's answer inside it (its `type`, when it is one).
        const answer = (error as { cause?: { type?: string; name?: string } }).cause;
        seen.lastRefusal = `${error.name}${answer ? ` (${answer.type ?? answer.name})` : ''}: ${error.message}`;
        throw error;
      });
    };
    return consumer;
  };
  return seen;
}

/**
 * Counts the promise rejections nobody handled in this process from now on, until disposed (the test
 * kit watches for them too, after each test; this is for a test that asserts on them itself).
 */
export function countUnhandledRejections(): { readonly count: number; readonly last?: string } & Disposable {
  const seen = { count: 0, last: undefined as string | undefined };
  const listener = (reason: unknown) => {
    seen.count += 1;
    seen.last = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  };
  process.on('unhandledRejection', listener);
  return Object.assign(seen, { [Symbol.dispose]: () => void process.off('unhandledRejection', listener) });
}

/**
 * Counts the times the handler (eachBatch or eachMessage) of every consumer made from `kafka` from now
 * on threw: kafkajs retries a batch whose handler failed, often without a crash to show for it, so a
 * handler that fails once and then passes leaves no other trace. The real client, instrumented from outside.
 */
export function countHandlerErrors(kafka: Kafka): { readonly count: number; readonly last?: string } {
  const seen = { count: 0, last: undefined as string | undefined };
  const counted =
    <T extends unknown[]>(handler: (...args: T) => Promise<void>) =>
    async (...args: T) => {
      try {
        await handler(...args);
      } catch (error) {
        seen.count += 1;
        seen.last = (error as Error).message;
        throw error;
      }
    };
  const original = kafka.consumer.bind(kafka);
  kafka.consumer = (config) => {
    const consumer = original(config);
    const run = consumer.run.bind(consumer);
    consumer.run = (options) =>
      run({
        ...options,
        ...(options?.eachBatch ? { eachBatch: counted(options.eachBatch) } : {}),
        ...(options?.eachMessage ? { eachMessage: counted(options.eachMessage) } : {}),
      });
    return consumer;
  };
  return seen;
}

/**
 * A kafkajs socket factory that opens every connection to 127.0.0.1:`port` (a stalling proxy in front
 * of the broker), whatever broker address kafkajs asked for. A proxy given only as the bootstrap
 * address would be bypassed: the broker's metadata advertises its own address, and kafkajs connects
 * there for everything after the first request. With one broker, every connection belongs to it, so
 * sending them all through the proxy is exactly "the broker stalls" or "the broker dies".
 */
export function throughProxy(port: number): ISocketFactory {
  return ({ onConnect }) => {
    const socket = connect(port, '127.0.0.1', onConnect);
    socket.setKeepAlive(true, 60_000);
    return socket;
  };
}

/**
 * Counts what failed on `pool`: a connection it could not open, or a query that failed (an error from
 * the server or the client's own query_timeout), whether through `pool.query()` or a checked-out
 * client. The real pool, instrumented from outside: how a spec sees a projector try the database and
 * fail, without waiting a fixed time.
 */
export function countFailures(pool: pg.Pool): { readonly count: number } {
  const seen = { count: 0 };
  type Callback = (error: Error | undefined, ...rest: unknown[]) => void;
  /** `args` with its callback (if its last argument is one) counting errors; and whether it had one. */
  const counting = (args: unknown[]): [unknown[], boolean] => {
    const last = args.at(-1);
    if (typeof last !== 'function') return [args, false];
    const callback: Callback = (error, ...rest) => {
      if (error) seen.count += 1;
      (last as Callback)(error, ...rest);
    };
    return [[...args.slice(0, -1), callback], true];
  };
  const wrap = (target: object, method: 'connect' | 'query') => {
    const original = (target as Record<string, (...args: unknown[]) => unknown>)[method]!.bind(target);
    (target as Record<string, unknown>)[method] = (...args: unknown[]) => {
      const [withCallback, hasCallback] = counting(args);
      const result = original(...withCallback);
      if (!hasCallback && result instanceof Promise)
        result.catch(() => {
          seen.count += 1;
        });
      return result;
    };
  };
  // pool.query() checks a client out through pool.connect() too, so wrapping it sees every checkout.
  wrap(pool, 'connect');
  const wrapped = new WeakSet<object>();
  pool.on('acquire', (client) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    wrap(client, 'query');
  });
  return seen;
}

/**
 * Makes one publish slow: every producer made from `kafka` from now on holds back the send that
 * carries event number 1 of `accountId` until `others` other events of that account have been
 * acknowledged, or `patienceMs` has passed. A GC pause or a retried request does this to one request
 * in production; here it happens every run. A design that numbers events and then publishes them
 * side by side lets the later numbers overtake; one that publishes in order simply waits.
 */
export function holdFirstEvent(kafka: Kafka, accountId: string, others: number, patienceMs = 2000): void {
  const original = kafka.producer.bind(kafka);
  let acknowledged = 0;
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  /** The account's event numbers in a send (messages that are not its events are left out). */
  const numbersIn = (messages: { value: Buffer | string | null }[]) =>
    messages.flatMap((message) => {
      try {
        const event = JSON.parse(String(message.value)) as { accountId?: unknown; seq?: unknown };
        return event.accountId === accountId && typeof event.seq === 'number' ? [event.seq] : [];
      } catch {
        return [];
      }
    });
  kafka.producer = (config) => {
    const producer = original(config);
    const send = producer.send.bind(producer);
    producer.send = async (record) => {
      const numbers = numbersIn(record.messages);
      if (numbers.includes(1)) await Promise.race([released, sleep(patienceMs)]);
      const result = await send(record);
      acknowledged += numbers.filter((seq) => seq !== 1).length;
      if (acknowledged >= others) release();
      return result;
    };
    return producer;
  };
}

/** Which events a send is looked at for, by their account and sequence number. */
type EventMatch = (event: { accountId?: unknown; seq?: unknown }) => boolean;

/** True when one of `messages` is an event `matches` (a value that is not JSON is no event). */
const carriesEvent = (messages: { value: Buffer | string | null }[], matches: EventMatch) =>
  messages.some((message) => {
    try {
      return matches(JSON.parse(String(message.value)) as { accountId?: unknown; seq?: unknown });
    } catch {
      return false;
    }
  });

/**
 * Puts `around` in the way of every send, of every producer made from `kafka` from now on, that carries
 * an event `matches`; other sends go straight through. `around` makes the send by calling `send`.
 */
function interceptSends(
  kafka: Kafka,
  matches: EventMatch,
  around: (send: () => ReturnType<Producer['send']>) => ReturnType<Producer['send']>,
): void {
  const original = kafka.producer.bind(kafka);
  kafka.producer = (config) => {
    const producer = original(config);
    const send = producer.send.bind(producer);
    producer.send = (record) => (carriesEvent(record.messages, matches) ? around(() => send(record)) : send(record));
    return producer;
  };
}

/**
 * Counts the sends of every producer made from `kafka` from now on that carry an event `matches`:
 * how many were started and how many kafkajs rejected (a rejected send is over: nothing of it reaches
 * the topic later). How a spec sees that a publish met an outage, instead of waiting a fixed time.
 */
export function watchSends(kafka: Kafka, matches: EventMatch): { readonly started: number; readonly rejected: number } {
  const seen = { started: 0, rejected: 0 };
  interceptSends(kafka, matches, async (send) => {
    seen.started += 1;
    try {
      return await send();
    } catch (error) {
      seen.rejected += 1;
      throw error;
    }
  });
  return seen;
}

/**
 * Holds back every send of every producer made from `kafka` from now on that carries an event
 * `matches`, until `release()`: the send is made, and acknowledged, only then. `held` counts the sends
 * that have started waiting. How a spec keeps a publisher inside its send (a relay between reading the
 * outbox and marking what it sent, with its connection in use) for exactly as long as it needs.
 */
export function holdSends(kafka: Kafka, matches: EventMatch): { readonly held: number; release(): void } {
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const seen = { held: 0, release: () => release() };
  interceptSends(kafka, matches, async (send) => {
    seen.held += 1;
    await released;
    return send();
  });
  return seen;
}

/**
 * Counts the sends of every producer made from `kafka` from now on (`sends`), and those that carried no
 * message at all (`empty`): a send with nothing to send is a round trip for nothing.
 */
export function countSends(kafka: Kafka): { readonly sends: number; readonly empty: number } {
  const seen = { sends: 0, empty: 0 };
  const original = kafka.producer.bind(kafka);
  kafka.producer = (config) => {
    const producer = original(config);
    const send = producer.send.bind(producer);
    producer.send = (record) => {
      seen.sends += 1;
      if (record.messages.length === 0) seen.empty += 1;
      return send(record);
    };
    return producer;
  };
  return seen;
}

/** How many producers were made from `kafka` from now on, and how many of them connected and disconnected. */
export function watchProducers(kafka: Kafka): { made: number; connected: number; disconnected: number } {
  const seen = { made: 0, connected: 0, disconnected: 0 };
  const original = kafka.producer.bind(kafka);
  kafka.producer = (config) => {
    const producer = original(config);
    seen.made += 1;
    producer.on(producer.events.CONNECT, () => {
      seen.connected += 1;
    });
    producer.on(producer.events.DISCONNECT, () => {
      seen.disconnected += 1;
    });
    return producer;
  };
  return seen;
}

/**
 * Where each message of every producer made from `kafka` from now on went: its value and the partition
 * the broker's answer names (sends of one message only, so the answer's one partition is the
 * message's). What the producer's partitioner chose, read from the broker instead of from the code.
 */
export function watchPartitions(kafka: Kafka): { value: string; partition: number }[] {
  const seen: { value: string; partition: number }[] = [];
  const original = kafka.producer.bind(kafka);
  kafka.producer = (config) => {
    const producer = original(config);
    const send = producer.send.bind(producer);
    producer.send = async (record) => {
      const result = await send(record);
      if (record.messages.length === 1 && result.length === 1)
        seen.push({ value: String(record.messages[0]!.value), partition: result[0]!.partition });
      return result;
    };
    return producer;
  };
  return seen;
}

/**
 * Runs `action` at the first query on `pool` that fails from now on, before the failure reaches the
 * code that sent it: whatever that code does next (retry, fall back, give up) meets the world `action`
 * made. How a spec takes the database away at the exact moment a projector first meets a failure.
 */
export function atFirstFailure(pool: pg.Pool, action: () => Promise<void>): void {
  let first: Promise<void> | undefined;
  const wrapped = new WeakSet<object>();
  pool.on('acquire', (client) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const result = query(...args);
      if (!(result instanceof Promise)) return result;
      return result.catch(async (error: unknown) => {
        first ??= action();
        await first;
        throw error;
      });
    };
  });
}
