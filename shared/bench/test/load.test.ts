/**
 * runLoad's latencies: every response's own time, whatever its status, to the microsecond. autocannon's
 * percentiles are whole milliseconds of 2xx responses only: a limiter's 429s would not count at all.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { runLoad } from '../src/index.ts';

describe('runLoad', () => {
  it('times every response, a 429 as much as a 200', async () => {
    // Every answer is a 429 held 4 ms: autocannon's own p50 would be 0 (it times 2xx only).
    const server = createServer((_req, res) => {
      setTimeout(() => {
        res.statusCode = 429;
        res.end('slow down');
      }, 4);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const result = await runLoad({
        name: 'all 429',
        url: `http://127.0.0.1:${port}/`,
        durationSec: 1,
        connections: 2,
        quiet: true,
      });
      expect(result.statusCounts['429']).toBeGreaterThan(0);
      expect(result.statusCounts['200']).toBeUndefined();
      // About the 4 ms the server held each answer (libuv's timers count from the loop's cached
      // millisecond, so one may fire up to a millisecond early; a busy machine makes them late).
      expect(result.p50Ms).toBeGreaterThanOrEqual(2.5);
      expect(result.p99Ms).toBeGreaterThanOrEqual(result.p50Ms);
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });
});
