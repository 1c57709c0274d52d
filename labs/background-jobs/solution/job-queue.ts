/**
 * Background jobs over RabbitMQ that survive crashes (the reference for src/job-queue.ts).
 *
 * The guarantee is at-least-once delivery, made to look like exactly-once by an idempotent worker.
 * Every hand-over waits for the next holder to have the job before letting go of it:
 *
 *   API -> broker    the publish is confirmed (a confirm channel) before the API answers 202;
 *   broker -> worker the delivery is acknowledged only after the effect is committed;
 *   worker -> retry  a failed job is re-published (confirmed) to a delay queue before it is acked.
 *
 * Whatever fails in between (a process killed, a connection dropped, a confirm lost) makes a step
 * happen again, never not at all. So the worker must tolerate seeing a job twice: it records the job
 * id in the same database transaction as the effect, and does nothing for an id it has seen.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { aborted } from 'node:util';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options } from 'amqplib';
import { isPostgresOutage } from '@labs/services';
import {
  type ConfirmationJob,
  DEAD_LETTER_HEADERS,
  decodeJob,
  encodeJob,
  JOB_ROUTING_KEY,
  type JobPublisher,
  type JobWorker,
  MalformedJobError,
  type QueueSettings,
  type WorkerDeps,
} from '../server/jobs.ts';

/**
 * Reconnect for ever, 100 ms after a loss, doubling up to 5 s, with jitter so a fleet of workers does
 * not reconnect in lockstep after a broker restart. amqplib 2 reconnects the connection; channels,
 * topology and consumers are ours to set up again, in `setup`, which it runs after every connect.
 */
// Mutation survivor: `{}` leaves amqplib's defaults, ours but for a 30 s cap: back later after a long outage, not less surely
const RECOVERY = { initialDelay: 100, maxDelay: 5000, factor: 2, jitter: 0.2 };

/**
 * amqplib leaves Nagle's algorithm on, so a lone small frame (an ack, a publish) can sit in the kernel
 * until the broker's delayed TCP ack, about 40 ms: a worker that acks one job at a time pays that per
 * job. `timeout` bounds the connect itself.
 */
// Mutation survivor: `{}` drops the connect timeout too; a test needs a broker that accepts and never answers (6 s a run)
// Stryker disable next-line BooleanLiteral: Nagle's delay costs latency (measured in the load script), never a job
const SOCKET = { noDelay: true, timeout: 5000 };

/**
 * The broker URL with a 15 s heartbeat unless it names one: a connection that died silently (a NAT
 * or firewall dropping it, a frozen peer) is noticed within two missed beats and reconnected, instead
 * of after the server's default of 60 s (or, with heartbeats off, never).
 */
function withHeartbeat(url: string): string {
  const parsed = new URL(url);
  if (!parsed.searchParams.has('heartbeat')) parsed.searchParams.set('heartbeat', '15');
  return parsed.toString();
}

/** How long stop() lets in-progress jobs finish before it closes anyway (the rest are redelivered). */
const STOP_GRACE_MS = 10_000;

/**
 * How long a close may take. amqplib's close() waits for the broker's close-ok and never settles if the
 * socket dies during that handshake; a shutdown must not hang on it.
 */
const CLOSE_TIMEOUT_MS = 2000;

/**
 * How long a worker holds a job it cannot do for now (the database is down or not answering, or the
 * broker refused its retry copy) before it gives the job back to the queue. Held, the delivery still
 * counts against the prefetch, so a worker tries at most `prefetch` jobs per pause against a service
 * that is away, instead of circling as fast as round trips allow.
 */
const GIVE_BACK_PAUSE_MS = 1000;

/** Our own header: which attempt a delivery is (absent on the first). */
// Stryker disable next-line StringLiteral: the header's name is ours, written and read only in this file
const ATTEMPT_HEADER = 'x-attempt';

/**
 * Declares the whole topology; idempotent, so the publisher and every worker run it on each connect.
 * The broker refuses (PRECONDITION_FAILED) a queue that exists with other arguments: change a queue's
 * arguments by giving it a new name, or with a policy, never by redeclaring it.
 */
async function declareTopology(channel: Channel, settings: QueueSettings): Promise<void> {
  // One retry queue per delay: jobQueueNames() makes the names from the delays.
  const { names, retryDelaysMs } = settings;
  // Stryker disable next-line ObjectLiteral: amqplib declares an exchange durable unless told otherwise; said for the reader
  await channel.assertExchange(names.exchange, 'direct', { durable: true });
  // Stryker disable next-line ObjectLiteral: amqplib declares a queue durable unless told otherwise; said for the reader
  await channel.assertQueue(names.queue, { durable: true });
  await channel.bindQueue(names.queue, names.exchange, JOB_ROUTING_KEY);
  // One delay queue per step, each with a queue-wide TTL: a job waits there `delay` ms, then the broker
  // dead-letters it back to the work exchange. Not one delay queue with a TTL per message: the broker
  // expires messages only at the head of a queue, so a job waiting 8 s would hold back every 500 ms
  // retry queued behind it.
  for (const [step, delay] of retryDelaysMs.entries()) {
    await channel.assertQueue(names.retryQueues[step]!, {
      durable: true,
      messageTtl: delay,
      deadLetterExchange: names.exchange,
      deadLetterRoutingKey: JOB_ROUTING_KEY,
    });
  }
  // Stryker disable next-line ObjectLiteral: amqplib declares a queue durable unless told otherwise; said for the reader
  await channel.assertQueue(names.deadQueue, { durable: true });
}

/**
 * Publishes on a confirm channel; resolves once the broker has taken responsibility for the message.
 * Once `signal` aborts (the caller has given up), a message not yet written is never written.
 */
type ConfirmedPublish = (
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish & { messageId: string },
  signal?: AbortSignal,
) => Promise<void>;

/**
 * Confirmed publishing on `channel`, with back-pressure: when publish() returns false the socket's
 * buffer is full, and further publishes wait for 'drain' instead of piling up in memory. Messages are
 * `mandatory`: a message no queue is bound for comes back (basic.return, before its confirm) and
 * counts as a failure, where a plain confirm would have said "ok" about a message the broker dropped.
 */
function confirmedPublisher(channel: ConfirmChannel): ConfirmedPublish {
  const returned = new Set<string>();
  channel.on('return', (message: ConsumeMessage) => returned.add(String(message.properties.messageId)));
  let drained: Promise<void> | undefined;
  const waitForDrain = () =>
    new Promise<void>((resolve) => {
      const done = () => {
        // Mutation survivor (both lines): a listener left behind per drain cycle costs memory; nothing a test counts changes
        channel.off('drain', done);
        channel.off('close', done);
        drained = undefined;
        resolve();
      };
      channel.on('drain', done);
      // Mutation survivor: without it, a publish waiting for room when its channel closes fails at its deadline, not on the next channel
      channel.on('close', done);
    });
  // Without a signal from the caller, one that never aborts: the publish waits for room as long as it takes.
  return async (exchange, routingKey, content, options, signal = new AbortController().signal) => {
    // Room first, but only while the caller still wants the job. A caller that gave up meanwhile has
    // answered "not queued"; written after that, the job would be done all the same (and twice, if
    // the client sends it again).
    const givenUp = aborted(signal, channel);
    while (drained && !signal.aborted) await Promise.race([drained, givenUp]);
    signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      // Stryker disable StringLiteral: the wording of an error is not behaviour (a next-line comment would not reach an `else if`)
      const written = channel.publish(
        exchange,
        routingKey,
        content,
        { ...options, persistent: true, mandatory: true },
        (error) => {
          if (error) reject(error instanceof Error ? error : new Error(`the broker refused the message: ${error}`));
          else if (returned.delete(options.messageId)) reject(new Error(`no queue is bound for "${routingKey}"`));
          else resolve();
        },
      );
      // Stryker restore StringLiteral
      if (!written) drained ??= waitForDrain();
    });
  };
}

/** Rejects with a message once `ms` have passed, unless `promise` settled first. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  const timeout = new AbortController();
  try {
    return await Promise.race([
      promise,
      sleep(Math.max(0, ms), undefined, { signal: timeout.signal }).then(() => {
        // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
        throw new Error(`${what} within the time allowed`);
      }),
    ]);
  } finally {
    timeout.abort();
  }
}

/** The API's side: puts jobs on the queue, and says so only once the broker has them. */
export async function createPublisher(settings: QueueSettings): Promise<JobPublisher> {
  let current: { channel: ConfirmChannel; publish: ConfirmedPublish } | undefined;
  let closing = false;
  const connection = await amqp.connect(withHeartbeat(settings.url), {
    ...SOCKET,
    recovery: {
      ...RECOVERY,
      setup: async (model: ChannelModel) => {
        const channel = await model.createConfirmChannel();
        // Stryker disable next-line all: it only logs: amqplib raises nothing of its own without it (tried: the exchange test's 404 passes, no unhandled error)
        channel.on('error', (error: Error) =>
          // Stryker disable next-line StringLiteral: the wording of a log line is not behaviour
          settings.log(`publisher channel: ${error.message}`),
        );
        channel.on('close', () => {
          // Stryker disable next-line ConditionalExpression,EqualityOperator: the connection's 'disconnect', which follows (this handler closes the model), clears `current` as well; a publish that takes the dead channel in between fails at once and is tried again after its pause
          if (current?.channel === channel) current = undefined;
          // A channel can die alone (a channel error) while its connection lives on, and recovery only
          // watches the connection: close it too, so everything is set up again.
          // Mutation survivor: forced true, a close() in progress closes the model a second time, which changes nothing
          if (!closing) model.close().catch(() => undefined);
        });
        await declareTopology(channel, settings);
        current = { channel, publish: confirmedPublisher(channel) };
      },
    },
  });
  // Stryker disable next-line ArrowFunction: a listener that does not log still keeps the error from crashing the process
  connection.on('error', (error: Error) =>
    // Stryker disable next-line StringLiteral: the wording of a log line is not behaviour
    settings.log(`publisher connection: ${error.message}`),
  );
  // Stryker disable next-line CallExpression,BlockStatement,StringLiteral: the channel's own 'close', which amqplib emits when its connection goes, clears `current` too (and a listener for an event of another name, or none at all, is no listener)
  connection.on('disconnect', () => {
    current = undefined;
  });
  // Publishes waiting for a reconnect ('connect' is emitted after setup, so `current` is set by then).
  const waiting = new Set<() => void>();
  connection.on('connect', () => {
    for (const wake of waiting) wake();
  });

  /** The current channel, waiting for a reconnect until `deadline` if there is none. */
  const channelBy = async (deadline: number) => {
    while (!current) {
      const left = deadline - Date.now();
      // Mutation survivor: `left < 0` waits one more 0 ms timer at the deadline before it throws
      // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
      if (left <= 0 || closing) throw new Error('no connection to the broker');
      await new Promise<void>((resolve) => {
        const wake = () => {
          // Stryker disable next-line all: a timer left running calls wake once more, which does nothing: the wait has ended and left the set
          clearTimeout(timer);
          // Mutation survivor: without it every wait leaves its wake function in the set: memory, nothing a test counts
          waiting.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        waiting.add(wake);
      });
    }
    return current;
  };

  return {
    async publish(job) {
      const deadline = Date.now() + settings.publishTimeoutMs;
      const content = encodeJob(job);
      const options = { messageId: job.jobId, contentType: 'application/json' };
      // Aborted when this publish gives up: an attempt still waiting for room in the socket's buffer
      // then ends without writing its job.
      const givingUp = new AbortController();
      for (let attempt = 1; ; attempt++) {
        const { publish } = await channelBy(deadline);
        try {
          await within(
            publish(settings.names.exchange, JOB_ROUTING_KEY, content, options, givingUp.signal),
            deadline - Date.now(),
            // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
            'not confirmed',
          );
          return;
        } catch (error) {
          // Unconfirmed: the broker may or may not have the job. Publish it again (after a reconnect if
          // the channel is gone): two copies of one job id are what the idempotent worker absorbs; no
          // copy at all is what it cannot.
          // Mutation survivor: `>` tries once more in the deadline's own millisecond, which then fails at once
          if (Date.now() >= deadline || closing) {
            givingUp.abort();
            // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
            throw new Error(`job ${job.jobId} not confirmed by the broker: ${(error as Error).message}`);
          }
          // Mutation survivor: `deadline + Date.now()` lets the last pause overshoot the deadline by up to 25 × attempt ms
          await sleep(Math.min(25 * attempt, Math.max(0, deadline - Date.now())));
        }
      }
    },
    async close() {
      closing = true;
      // Stryker disable next-line StringLiteral: the error is thrown away: its wording is not behaviour
      await within(connection.close(), CLOSE_TIMEOUT_MS, 'not closed').catch(() => undefined);
    },
  };
}

/**
 * Sends the confirmation of `job` unless it was sent before. The job id is claimed in the same
 * transaction as the effect: both are committed, or neither. Two deliveries of one job at once are
 * safe too: the second INSERT waits on the first's uncommitted row, then finds it and does nothing.
 *
 * This works because the effect is a row in the same database. An effect elsewhere (an email
 * provider's API) cannot join the transaction: pass the job id as that API's idempotency key instead.
 */
async function sendConfirmationOnce(job: ConfirmationJob, deps: WorkerDeps): Promise<'sent' | 'already sent'> {
  const client = await deps.db.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const claimed = await client.query('INSERT INTO processed_jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING', [
      job.jobId,
    ]);
    if (claimed.rowCount === 1) await deps.sendConfirmation(client, job);
    await client.query('COMMIT');
    // Stryker disable next-line all: the result says what happened to a reader; handle() does not use it
    return claimed.rowCount === 1 ? 'sent' : 'already sent';
  } catch (error) {
    // Mutation survivor (true and false): true drops a sound connection after a job's own failure (a new one per try); false waits out a dead one's ROLLBACK
    if (isPostgresOutage(error)) {
      // The connection broke or timed out mid-transaction: a ROLLBACK on it would only wait out another
      // timeout. Drop it instead; the server rolls back a transaction whose connection has gone.
      broken = error as Error;
    } else {
      // Mutation survivor: never reached: a connection that breaks between a job's own error and its ROLLBACK
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        broken = rollbackError; // the connection is unusable: release it as such, the pool drops it
      });
    }
    throw error;
  } finally {
    client.release(broken);
  }
}

/** The background's side: consumes jobs, does each once in effect, retries with growing delays. */
export async function startWorker(settings: QueueSettings, deps: WorkerDeps): Promise<JobWorker> {
  const { names, retryDelaysMs, log } = settings;
  const inProgress = new Set<Promise<void>>();
  let consuming: { channel: ConfirmChannel; consumerTag: string } | undefined;
  let stopping = false;
  let lastOutageLine = 0;

  /** Acks on the channel that delivered; if it has closed, the broker has requeued the job already. */
  const ack = (channel: Channel, message: ConsumeMessage) => {
    try {
      channel.ack(message);
    } catch {
      // IllegalOperationError: channel closed. The job comes back, and is recognised as done.
    }
  };

  /** Gives the job back to the queue as it is, attempt count untouched, after a pause (unless stopping). */
  const giveBack = async (channel: Channel, message: ConsumeMessage) => {
    // Mutation survivor: forced true, a stopping worker gives the job back a second later, or its channel closes first and does
    if (!stopping) await sleep(GIVE_BACK_PAUSE_MS);
    try {
      channel.nack(message, false, true);
    } catch {
      // Channel closed: the broker has requeued it already.
    }
  };

  /** Hands a failed job to the next retry queue, or to the dead-letter queue after the last attempt. */
  const retryOrBury = async (publish: ConfirmedPublish, message: ConsumeMessage, attempt: number, error: Error) => {
    // Keep the producer's own headers; drop the broker's (x-death, ...) and ours, which are set afresh.
    const carried = Object.fromEntries(
      // Mutation survivor (2): without the filter, copies also carry the broker's and our `x-` headers; no test forbids it
      Object.entries(message.properties.headers ?? {}).filter(([name]) => !name.startsWith('x-')),
    );
    const options = {
      messageId: String(message.properties.messageId),
      contentType: message.properties.contentType as string | undefined,
    };
    const step = attempt - 1;
    if (step < retryDelaysMs.length && !(error instanceof MalformedJobError)) {
      // Stryker disable next-line CallExpression: whether a log line is written is not behaviour
      log(
        // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
        `job ${options.messageId} failed (attempt ${attempt}): ${error.message}; next try in ${retryDelaysMs[step]} ms`,
      );
      await publish('', names.retryQueues[step]!, message.content, {
        ...options,
        headers: { ...carried, [ATTEMPT_HEADER]: attempt + 1, 'x-last-error': error.message },
      });
      return;
    }
    // Stryker disable next-line StringLiteral,CallExpression: what a log line says, or whether it is written, is not behaviour
    log(`job ${options.messageId} dead-lettered after ${attempt} attempt(s): ${error.message}`);
    await publish('', names.deadQueue, message.content, {
      ...options,
      headers: {
        ...carried,
        [DEAD_LETTER_HEADERS.error]: error.message,
        [DEAD_LETTER_HEADERS.attempts]: attempt,
        'x-failed-at': new Date().toISOString(),
        'x-original-queue': names.queue,
      },
    });
  };

  /** One delivery, start to finish. Never rejects. */
  const handle = async (channel: ConfirmChannel, publish: ConfirmedPublish, message: ConsumeMessage) => {
    // Stryker disable next-line OptionalChaining: amqplib gives every delivery a headers object, empty when it has none
    const attempt = Math.max(1, Number(message.properties.headers?.[ATTEMPT_HEADER]) || 1);
    try {
      await sendConfirmationOnce(decodeJob(message.content), deps);
    } catch (error) {
      if (isPostgresOutage(error)) {
        // The database is down or not answering: the job is fine, its effect just could not be written.
        // Spending one of its attempts would dead-letter every job of a long enough outage, so give it
        // back to the queue as it is, after a pause: it is done once the database is back. (A failure
        // of the job itself, a product no longer in the catalogue, a row it may not write, takes the
        // retry path.)
        // Stryker disable next-line EqualityOperator: one millisecond more or less between two log lines is not behaviour
        if (Date.now() - lastOutageLine >= 5000) {
          lastOutageLine = Date.now(); // one line every 5 s: an outage fails every job, and says so once
          // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
          log(`the database is not answering, jobs go back to the queue until it does: ${(error as Error).message}`);
        }
        await giveBack(channel, message);
        return;
      }
      try {
        // Confirmed before the ack: if we die in between, the job exists twice (harmless), never zero times.
        await retryOrBury(publish, message, attempt, error instanceof Error ? error : new Error(String(error)));
      } catch (publishError) {
        // Stryker disable next-line StringLiteral,CallExpression: what a log line says, or whether it is written, is not behaviour
        log(`could not pass on failed job ${message.properties.messageId}: ${(publishError as Error).message}`);
        // Give it back as it is: the broker or the channel failed, not the job. Not at once: a copy
        // refused now (its queue gone, say) is refused again on the next try, and the loop would spin.
        await giveBack(channel, message);
        return;
      }
    }
    ack(channel, message);
  };

  const connection = await amqp.connect(withHeartbeat(settings.url), {
    ...SOCKET,
    recovery: {
      ...RECOVERY,
      setup: async (model: ChannelModel) => {
        const channel = await model.createConfirmChannel();
        // Stryker disable next-line all: it only logs: amqplib raises nothing of its own without it (tried on the publisher's: no unhandled error)
        channel.on('error', (error: Error) =>
          // Stryker disable next-line StringLiteral: the wording of a log line is not behaviour
          log(`worker channel: ${error.message}`),
        );
        channel.on('close', () => {
          // Stryker disable next-line ConditionalExpression,EqualityOperator: only stop() reads `consuming`, and a closed channel's cancel and close reject at once (caught there; tried: a worker stopped while the broker is unreachable stops as soon), so one left set until the next set-up, or cleared on any close, stops the same
          if (consuming?.channel === channel) consuming = undefined;
          // Mutation survivor: forced true, a stop() in progress closes the model a second time, which changes nothing
          if (!stopping) model.close().catch(() => undefined); // set everything up again (see the publisher)
        });
        await declareTopology(channel, settings);
        // At most `prefetch` unacked deliveries to this consumer: the rest wait in the queue, where another
        // worker can take them and where a crash of this one cannot touch them.
        await channel.prefetch(settings.prefetch);
        if (stopping) return;
        const publish = confirmedPublisher(channel);
        const { consumerTag } = await channel.consume(
          names.queue,
          (message: ConsumeMessage | null) => {
            if (message === null) {
              // The broker cancelled us (the queue was deleted): reconnect, which declares it again.
              // Mutation survivor: forced true, a cancel while stopping closes the model that stop() is closing anyway
              if (!stopping) model.close().catch(() => undefined);
              return;
            }
            const job = handle(channel, publish, message);
            inProgress.add(job);
            // Mutation survivor: a finished job's promise left in the set: memory, and stop() waits on settled promises
            void job.finally(() => inProgress.delete(job));
          },
          // Stryker disable next-line ObjectLiteral: amqplib consumes with acknowledgements unless told otherwise; said for the reader
          { noAck: false },
        );
        consuming = { channel, consumerTag };
      },
    },
  });
  // Stryker disable next-line ArrowFunction: a listener that does not log still keeps the error from crashing the process
  connection.on('error', (error: Error) =>
    // Stryker disable next-line StringLiteral: the wording of a log line is not behaviour
    log(`worker connection: ${error.message}`),
  );

  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        stopping = true;
        // 1. No new deliveries. 2. Let the jobs in progress finish and ack. 3. Close: anything still
        // unacked (only after the grace period) goes back to the queue for another worker.
        const active = consuming;
        if (active) {
          // Bounded like the closes below: a broker that has stopped answering never sends its cancel-ok.
          // Stryker disable next-line StringLiteral: the error is thrown away: its wording is not behaviour
          await within(active.channel.cancel(active.consumerTag), CLOSE_TIMEOUT_MS, 'not cancelled').catch(
            () => undefined,
          );
        }
        // Stryker disable next-line StringLiteral,ArrowFunction: what the log line says, or whether it is written, is not behaviour
        await within(Promise.allSettled([...inProgress]), STOP_GRACE_MS, 'jobs not finished').catch((error: Error) =>
          // Stryker disable next-line StringLiteral: the wording of an error or log line is not behaviour
          log(`stopping with ${inProgress.size} job(s) in progress: ${error.message}`),
        );
        // The channel first: frames on one channel keep their order, so its last acks reach the broker
        // before its close does. The connection's close travels on a channel of its own and can overtake
        // them, and the broker, closing, would requeue jobs that are done.
        // Stryker disable next-line StringLiteral: the error is thrown away: its wording is not behaviour
        if (active) await within(active.channel.close(), CLOSE_TIMEOUT_MS, 'not closed').catch(() => undefined);
        // Stryker disable next-line StringLiteral: the error is thrown away: its wording is not behaviour
        await within(connection.close(), CLOSE_TIMEOUT_MS, 'not closed').catch(() => undefined);
      })();
      return stopped;
    },
  };
}
