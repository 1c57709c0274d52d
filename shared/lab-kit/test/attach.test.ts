/**
 * What `build` may add to its server (`attach`): wired by the kit's listen, for `startLab` and for
 * `context.listen(built)` alike, and its before-close step run before the server's connections are cut.
 */
import { request } from 'node:http';
import type { Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { defineLab, startLab } from '../src/index.ts';

/** A lab whose server answers an HTTP upgrade itself, and records when its before-close step ran. */
function upgradingLab(events: string[]) {
  return defineLab({
    slug: 'attach-test',
    build: () => ({
      app: (_req, res) => res.end('plain'),
      attach: (server: Server) => {
        server.on('upgrade', (_req, socket) => {
          socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
        });
        events.push('attached');
        return () => {
          events.push(`before close (listening: ${server.listening})`);
        };
      },
    }),
  });
}

/** Sends an upgrade request and resolves with the status line's code. */
function upgrade(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { Connection: 'Upgrade', Upgrade: 'test' } });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => resolve(res.statusCode ?? 0));
    req.on('error', reject);
    req.end();
  });
}

describe('attach', () => {
  it('startLab wires it: the server answers the upgrade, and the before-close step runs first on close', async () => {
    const events: string[] = [];
    const lab = await startLab(upgradingLab(events));
    expect(await upgrade(lab.url)).toBe(101);
    await lab.close();
    expect(events).toEqual(['attached', 'before close (listening: true)']);
  });

  it('context.listen(built) wires it too, for a spec that starts several instances', async () => {
    const events: string[] = [];
    const definition = upgradingLab(events);
    const lab = await startLab(defineLab({ slug: 'attach-test-2', build: () => ({ app: (_q, r) => r.end() }) }));
    const second = await lab.context.listen(await definition.build(lab.context, {}));
    expect(await upgrade(second.url)).toBe(101);
    await lab.close();
    expect(events).toEqual(['attached', 'before close (listening: true)']);
  });
});
