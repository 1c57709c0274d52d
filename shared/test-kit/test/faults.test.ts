/**
 * The stalling proxy, in front of a small TCP echo server: what passes, what is held, what is refused.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { stallingProxy } from '../src/index.ts';

const echo = createServer((socket) => socket.pipe(socket));
await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
const echoUrl = `redis://127.0.0.1:${(echo.address() as AddressInfo).port}`;
afterAll(() => new Promise((resolve) => echo.close(resolve)));

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
});
