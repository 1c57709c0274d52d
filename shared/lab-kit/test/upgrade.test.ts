/**
 * WebSocket endpoints: a refused upgrade is a problem on the raw socket (a real server, a real
 * request), a handshake is checked before anyone is asked who sent it, and a stop is bounded.
 */
import { EventEmitter } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClosableSocket, closeWebSockets, handshakeProblem, refuseUpgrade } from '../src/upgrade.ts';

const server = createServer((_req, res) => res.end('plain'));
server.on('upgrade', (req, socket) => {
  const refusal = handshakeProblem(req, '/ws') ?? { status: 503, detail: 'the hub is away' };
  refuseUpgrade(socket, refusal, 7);
});
let url = '';
beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const GOOD = {
  Connection: 'Upgrade',
  Upgrade: 'websocket',
  'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Version': '13',
};

/** Sends an upgrade request; resolves with the status, headers and body the server wrote. */
function tryUpgrade(path: string, headers: Record<string, string>, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: Record<string, unknown> }>(
    (resolve, reject) => {
      const req = request(`${url}${path}`, { method, headers });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(body) }));
      });
      req.on('upgrade', () => reject(new Error('the upgrade was accepted')));
      req.on('error', reject);
      req.end();
    },
  );
}

describe('handshakeProblem and refuseUpgrade', () => {
  it('answer each malformed handshake with its status as a problem, and what to change', async () => {
    const cases = [
      { path: '/elsewhere', headers: GOOD, status: 404, detail: /served on \/ws/ },
      { path: '/ws', headers: { ...GOOD, Upgrade: 'h2c' }, status: 400, detail: /websocket upgrade/ },
      { path: '/ws', headers: GOOD, method: 'POST', status: 405, detail: /GET/, header: ['allow', 'GET'] },
      { path: '/ws', headers: { ...GOOD, 'Sec-WebSocket-Key': 'short' }, status: 400, detail: /Sec-WebSocket-Key/ },
      {
        path: '/ws',
        headers: { ...GOOD, 'Sec-WebSocket-Version': '12' },
        status: 400,
        detail: /Sec-WebSocket-Version/,
        header: ['sec-websocket-version', '13, 8'],
      },
    ];
    for (const { path, headers, method, status, detail, header } of cases) {
      const answer = await tryUpgrade(path, headers, method);
      expect(answer.status).toBe(status);
      expect(answer.headers['content-type']).toBe('application/problem+json');
      expect(answer.body).toMatchObject({ status });
      expect(answer.body.detail).toMatch(detail);
      if (header) expect(answer.headers[header[0] as string]).toBe(header[1]);
      expect(answer.headers['retry-after'], 'only a 503 says when to come back').toBeUndefined();
    }
  });

  it('let a well-formed handshake through; a 503 refusal carries Retry-After', async () => {
    const answer = await tryUpgrade('/ws?token=x', GOOD);
    expect(answer).toMatchObject({ status: 503, headers: { 'retry-after': '7' } });
    expect(answer.body).toEqual({ title: 'Service Unavailable', status: 503, detail: 'the hub is away' });
  });
});

/** A connection that answers a close frame (or never does, the client that stopped reading). */
function socket(answers: boolean) {
  const events: string[] = [];
  const emitter = new EventEmitter();
  const s: ClosableSocket = {
    close(code, reason) {
      events.push(`close ${code} ${reason}`);
      if (answers) setImmediate(() => emitter.emit('close'));
    },
    terminate() {
      events.push('terminate');
    },
    once: (event, listener) => emitter.once(event, listener),
  };
  return { s, events };
}

describe('closeWebSockets', () => {
  it('says goodbye to every connection and waits for the answers, no longer than the grace', async () => {
    const polite = socket(true);
    const silent = socket(false);
    await closeWebSockets([polite.s, silent.s], { reason: 'bye', graceMs: 50 });
    expect(polite.events[0]).toBe('close 1001 bye');
    expect(silent.events).toEqual(['close 1001 bye', 'terminate']);
  });

  it('does not wait for the grace when every connection answered', async () => {
    const sockets = [socket(true), socket(true)];
    const stopped = closeWebSockets(
      sockets.map(({ s }) => s),
      { code: 4000, reason: 'moving', graceMs: 3_600_000 },
    );
    await expect(stopped).resolves.toBeUndefined(); // an hour's grace would time the test out
    expect(sockets[0]?.events[0]).toBe('close 4000 moving');
  });
});
