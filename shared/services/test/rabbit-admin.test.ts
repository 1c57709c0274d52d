/**
 * The RabbitMQ admin against a real broker: a queue's depth and consumers, confirmed publishes (and an
 * unroutable one refused), and deleting what a run declared, missing names included.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { openRabbitAdmin, resolveService, stopServices } from '../src/index.ts';

const { url } = await resolveService('rabbitmq', { log: null });
const name = `labs-rabbit-admin-${randomBytes(4).toString('hex')}`;
afterAll(stopServices);

describe('openRabbitAdmin', () => {
  it('counts a queue, publishes to it with confirms, refuses an unroutable message, and deletes the lot', async () => {
    await using admin = await openRabbitAdmin(url);
    const connection = await amqp.connect(url);
    try {
      const channel = await connection.createChannel();
      channel.on('error', () => {}); // the check of a deleted exchange below closes it, on purpose
      await channel.assertExchange(name, 'direct', { durable: false });
      await channel.assertQueue(name, { durable: false });
      await channel.bindQueue(name, name, 'key');
      expect(await admin.queueState(`${name}-missing`), 'a queue that does not exist').toBeUndefined();
      expect(await admin.queueState(name)).toEqual({ messages: 0, consumers: 0 });

      const messages = Array.from({ length: 3 }, (_, i) => ({
        content: Buffer.from(`${i}`),
        properties: { messageId: `m${i}` },
      }));
      await admin.publish(name, 'key', messages);
      expect(await admin.queueState(name)).toEqual({ messages: 3, consumers: 0 });
      const first = await channel.get(name, { noAck: true });
      expect(first && [first.content.toString(), first.properties.messageId, first.properties.deliveryMode]).toEqual([
        '0',
        'm0',
        2,
      ]);
      await expect(admin.publish(name, 'no-queue-bound', messages.slice(0, 1))).rejects.toThrow(
        /1 message\(s\) were not routed/,
      );

      await admin.deleteAll([name, `${name}-missing`], [name]);
      expect(await admin.queueState(name)).toBeUndefined();
      await expect(channel.checkExchange(name)).rejects.toThrow(/NOT_FOUND/);
    } finally {
      await admin.deleteAll([name], [name]);
      await connection.close().catch(() => undefined);
    }
  });
});
