/**
 * RabbitMQ seen from outside a lab's own code (a spec, a load script, a lab's clean-up): how deep a
 * queue is, messages published with the broker's confirms, a run's queues and exchanges deleted. Each
 * operation gets a channel of its own, because AMQP closes a channel on its first error (asking about a
 * queue that does not exist is one).
 */
import { once } from 'node:events';
import amqp, { type Channel, type Options } from 'amqplib';

/** One message to {@link RabbitAdmin.publish}: its body and its properties (a messageId, headers). */
export interface AdminMessage {
  content: Buffer;
  properties?: Options.Publish;
}

/** A connection for looking at and tidying queues; closing (or disposing) it ends the connection. */
export interface RabbitAdmin extends AsyncDisposable {
  /** Ready messages (not those held unacked) and consumers; undefined when the queue does not exist. */
  queueState(queue: string): Promise<{ messages: number; consumers: number } | undefined>;
  /**
   * Publishes `messages` to `exchange` in order, persistent and mandatory, and waits for the broker's
   * confirms, pausing on back-pressure. A message no queue is bound for is an error, not a silent drop.
   */
  publish(exchange: string, routingKey: string, messages: readonly AdminMessage[]): Promise<void>;
  /** Deletes `queues`, then `exchanges`; missing ones are skipped. */
  deleteAll(queues: readonly string[], exchanges?: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

/** Connects to `url` for admin work. */
export async function openRabbitAdmin(url: string): Promise<RabbitAdmin> {
  const connection = await amqp.connect(url);
  connection.on('error', () => {}); // 'close' follows; every operation below reports its own failure
  const withChannel = async <T>(work: (channel: Channel) => Promise<T>): Promise<T> => {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      return await work(channel);
    } finally {
      await channel.close().catch(() => undefined);
    }
  };
  const close = () => connection.close().catch(() => undefined);
  return {
    async queueState(queue) {
      try {
        const { messageCount, consumerCount } = await withChannel((channel) => channel.checkQueue(queue));
        return { messages: messageCount, consumers: consumerCount };
      } catch {
        return undefined;
      }
    },
    async publish(exchange, routingKey, messages) {
      const channel = await connection.createConfirmChannel();
      channel.on('error', () => {});
      let returned = 0;
      channel.on('return', () => returned++);
      try {
        for (const { content, properties } of messages) {
          const options = { persistent: true, mandatory: true, contentType: 'application/json', ...properties };
          if (!channel.publish(exchange, routingKey, content, options)) await once(channel, 'drain');
        }
        await channel.waitForConfirms();
      } finally {
        await channel.close().catch(() => undefined);
      }
      if (returned > 0) throw new Error(`${returned} message(s) were not routed to any queue: is the queue declared?`);
    },
    async deleteAll(queues, exchanges = []) {
      for (const queue of queues) await withChannel((channel) => channel.deleteQueue(queue)).catch(() => undefined);
      for (const name of exchanges) await withChannel((channel) => channel.deleteExchange(name)).catch(() => undefined);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
