/**
 * The stalling proxy, in front of a small TCP echo server: what passes, what is held, what is refused.
 * The delaying proxy, in front of the echo server and a real Redis: bytes stay in order, an unawaited
 * write is provably still on its way when a read happens, and seeded jitter reorders two connections.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { uniqueId } from '@labs/lab-kit';
import { createRedisClient, resolveService, stopServices } from '@labs/services';
import { delayingProxy, stallingProxy } from '../src/index.ts';

const echo = createServer((socket) => socket.pipe(socket));
await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
const echoUrl = `redis://127.0.0.1:${(echo.address() as AddressInfo).port}`;
afterAll(() => new Promise((resolve) => echo.close(resolve)));
afterAll(stopServices);

/** Connects to `port`; resolves with the socket, or with the error code when refused. */
async function dial(port: number): Promise<Socket | string> {
  const socket = connect(port, '127.0.0.1');
  const [outcome] = await Promise.race([once(socket, 'connect').then(() => ['ok']), once(socket, 'error')]);
  return outcome === 'ok' ? socket : (outcome as NodeJS.ErrnoException).code!;
}

/** Writes `text` and resolves with what comes back, or 'nothing' after `waitMs`. */
async function roundTrip(socket: Socket, text: string, waitMs = 300): Promise<string> {
  socket.write(text);
  const reply = once(socket, 'data').then(([chunk]) => String(chunk));
  const silence = new Promise<string>((resolve) => setTimeout(() => resolve('nothing'), waitMs));
  return Promise.race([reply, silence]);
}

describe('stallingProxy', () => {
  it('passes bytes, holds them while stalled, and passes what it held on resume', async () => {
    await using proxy = await stallingProxy(echoUrl);
    const socket = (await dial(proxy.port)) as Socket;
    expect(await roundTrip(socket, 'one')).toBe('one');
    proxy.stall();
    expect(await roundTrip(socket, 'two')).toBe('nothing');
    const held = once(socket, 'data').then(([chunk]) => String(chunk));
    proxy.resume();
    expect(await held).toBe('two');
    socket.destroy();
  });

  it('refuses connections once killed, and accepts them on the same port once revived', async () => {
    await using proxy = await stallingProxy(echoUrl);
    const before = (await dial(proxy.port)) as Socket;
    const closed = once(before, 'close');
    await proxy.kill();
    await closed; // the open connection was closed too
    expect(await dial(proxy.port)).toBe('ECONNREFUSED');
    await proxy.revive();
    const after = (await dial(proxy.port)) as Socket;
    expect(await roundTrip(after, 'back')).toBe('back');
    after.destroy();
  });

  it('answers once revived, even when it was stalled before the kill (a restarted server is not frozen)', async () => {
    await using proxy = await stallingProxy(echoUrl);
    const before = (await dial(proxy.port)) as Socket;
    proxy.stall();
    before.write('held by the stall');
    await proxy.kill();
    await proxy.revive();
    const after = (await dial(proxy.port)) as Socket;
    // No silence window: the reply comes, or the test's own timeout says it never did.
    const reply = once(after, 'data').then(([chunk]) => String(chunk));
    after.write('back');
    expect(await reply).toBe('back');
    after.destroy();
  });
});

/** Polls `condition` every few milliseconds until it holds (the test's timeout bounds it). */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 2));
}

describe('delayingProxy', () => {
  it('keeps the bytes of a connection in order under jitter', async () => {
    await using proxy = await delayingProxy(echoUrl, { delayMs: 5, jitterMs: 5, seed: 3 });
    const socket = (await dial(proxy.port)) as Socket;
    let received = '';
    socket.on('data', (chunk) => {
      received += String(chunk);
    });
    const sent = Array.from({ length: 200 }, (_, i) => `${i};`);
    for (const part of sent) {
      socket.write(part);
      await new Promise((resolve) => setImmediate(resolve)); // most parts a chunk of their own
    }
    await until(() => received.length === sent.join('').length);
    expect(received).toBe(sent.join(''));
    socket.destroy();
  });

  it('holds an unawaited write on its way while a read on another connection runs, then delivers it', async () => {
    const { url } = await resolveService('redis', { log: null });
    const key = `labs:test:${uniqueId()}:profile`;
    await using proxy = await delayingProxy(url, {});
    const far = createRedisClient(proxy.url, { commandTimeout: 10_000 });
    const near = createRedisClient(url);
    try {
      await far.ping(); // connected at loopback speed; from here on, a second each way
      proxy.setDelay({ delayMs: 1000 });
      const write = far.set(key, 'saved', 'PX', 60_000); // not awaited yet, as the buggy API would
      await until(() => proxy.inFlight().toService === 1);
      expect(await near.get(key)).toBeNull(); // still in the proxy: the read cannot see it, on any machine
      await proxy.drained();
      expect(await write).toBe('OK');
      expect(await near.get(key)).toBe('saved');
    } finally {
      await near.del(key);
      far.disconnect();
      near.disconnect();
    }
  });

  it("with seeded jitter, delivers two connections' commands in another order than they were sent", async () => {
    const { url } = await resolveService('redis', { log: null });
    const key = `labs:test:${uniqueId()}:last`;
    // Seed 1 draws about +0.25 then -1.0 of the jitter: the first command waits ~375 ms, the second ~2 ms.
    await using proxy = await delayingProxy(url, { delayMs: 300, jitterMs: 300, seed: 1 });
    const first = (await dial(proxy.port)) as Socket;
    const second = (await dial(proxy.port)) as Socket;
    const near = createRedisClient(url);
    try {
      first.write(`SET ${key} first PX 60000\r\n`);
      await until(() => proxy.inFlight().toService === 1);
      second.write(`SET ${key} second PX 60000\r\n`);
      await proxy.drained();
      expect(await near.get(key)).toBe('first'); // the command sent last landed first
    } finally {
      await near.del(key);
      near.disconnect();
      first.destroy();
      second.destroy();
    }
  });

  it('stalls like the stalling proxy, on top of its delay', async () => {
    await using proxy = await delayingProxy(echoUrl, { delayMs: 20 });
    const socket = (await dial(proxy.port)) as Socket;
    expect(await roundTrip(socket, 'one', 2000)).toBe('one');
    proxy.stall();
    expect(await roundTrip(socket, 'two', 300)).toBe('nothing');
    expect(proxy.inFlight().toService + proxy.inFlight().toClient).toBe(1);
    const held = once(socket, 'data').then(([chunk]) => String(chunk));
    proxy.resume();
    expect(await held).toBe('two');
    socket.destroy();
  });
});
