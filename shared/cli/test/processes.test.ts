/**
 * The commands that keep running (serve, bench) as a learner uses them: started as a process, stopped
 * with Ctrl-C, and checked for what they leave behind: a port still taken, a server still running.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { freePort } from '@labs/services';
import { hasStackTrace, lab, repo, startLab } from './helpers.ts';

const state = mkdtempSync(join(tmpdir(), 'lab-cli-state-'));
const env = { LABS_STATE_DIR: state };
afterAll(() => rmSync(state, { recursive: true, force: true }));

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => socket.destroy() && resolve(true));
    socket.once('error', () => resolve(false));
  });
}

/**
 * Command lines of running processes that run code of `labDir`: its server (src/) or its load script
 * and the servers that forks (load/). With `specRunOf`, instead, the spec runs that command line (by
 * pid) started: their report file names carry its pid. `pnpm test` may be checking the same lab right
 * now; its processes match neither.
 */
function processesOf(labDir: string, options: { specRunOf?: number } = {}): string[] {
  const ps = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n');
  if (options.specRunOf !== undefined)
    return ps.filter((line) => line.includes(labDir) && line.includes(`-${options.specRunOf}.json`));
  return ps.filter(
    (line) =>
      line.includes(`serve.ts ${labDir}`) ||
      line.includes(`${join(labDir, 'src')}/`) ||
      line.includes(`${join(labDir, 'load')}/`),
  );
}

describe('pnpm lab serve', () => {
  it('prints the URL and config, serves the lab, and Ctrl-C stops it without leaving anything running', async () => {
    const port = await freePort();
    const serve = startLab(['serve', 'rate-limiter', '--port', String(port)], { env });
    onTestFailed(() => serve.interrupt());
    const [, url] = await serve.waitFor(/listening on (http:\/\/\S+)/);
    await serve.waitFor(/Limit: \d+ requests per \d+ ms[\s\S]*Stop: +Ctrl-C/);
    // The service was found once, by the command line, and announced once.
    expect(serve.output().match(/\[services\] Redis/g)).toHaveLength(1);

    const response = await fetch(`${url}/api/quote`, { headers: { 'x-api-key': `cli-test-${port}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('ratelimit-policy')).toMatch(/;w=\d+/);

    serve.interrupt();
    const r = await serve.result;
    expect(r.code).toBe(0); // Ctrl-C is how a server is meant to stop
    expect(await listening(port)).toBe(false);
    expect(processesOf(join(repo, 'labs', 'rate-limiter'))).toEqual([]);
  });

  for (const how of ['SIGHUP', 'SIGKILL'] as const) {
    it(`${how === 'SIGHUP' ? 'a closed terminal (SIGHUP)' : 'a killed command line (SIGKILL)'} leaves nothing running`, async () => {
      const port = await freePort();
      const serve = startLab(['serve', 'rate-limiter', '--port', String(port)], { env });
      onTestFailed(() => serve.interrupt('SIGKILL'));
      await serve.waitFor(/listening on (http:\/\/\S+)/);
      expect(await listening(port)).toBe(true);
      serve.interrupt(how);
      await serve.result;
      // The server notices (a signal, or its parent gone) and closes its port: wait for that, however long
      // a busy machine takes; a server that never notices is a hang, which the test's timeout reports.
      while (await listening(port)) await new Promise((r) => setTimeout(r, 100));
      expect(processesOf(join(repo, 'labs', 'rate-limiter'))).toEqual([]);
    });
  }

  it('a port in use is named, with another port to try, and no stack trace', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await lab(['serve', 'rate-limiter', '--port', String(port)], { env });
      expect(r.code).not.toBe(0);
      expect(r.out).toContain(`Port ${port} is already in use`);
      expect(r.out).toMatch(/or use another: --port \d+ \(free right now\)/);
      expect(hasStackTrace(r.out)).toBe(false);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});

describe('pnpm lab bench', () => {
  it('a duration that is not a number of seconds stops it before any server starts', async () => {
    const r = await lab(['bench', 'rate-limiter'], { env: { ...env, BENCH_DURATION_SEC: 'ten' } });
    expect(r.code).toBe(2);
    expect(r.out).toContain('BENCH_DURATION_SEC must be a whole number of seconds from 1 to 600, got "ten"');
    expect(r.out).not.toContain('Warming up');
    expect(hasStackTrace(r.out)).toBe(false);
  });

  it('Ctrl-C in the middle of a run stops the load script and the servers it forked', async () => {
    const bench = startLab(['bench', 'rate-limiter'], { env: { ...env, BENCH_DURATION_SEC: '20' } });
    onTestFailed(() => bench.interrupt());
    // Progress dots mean autocannon is running against servers in a child process.
    await bench.waitFor(/^ {2}bare +\./m);
    const running = processesOf(join(repo, 'labs', 'rate-limiter'));
    expect(running.some((line) => line.includes('load/bench.ts'))).toBe(true);
    expect(running.some((line) => line.includes('servers-child') && line.includes('load/servers.ts'))).toBe(true);
    bench.interrupt();
    const r = await bench.result;
    expect(r.code).toBe(130);
    expect(r.out).not.toMatch(/Figures written/);
    expect(hasStackTrace(r.out)).toBe(false);
    expect(processesOf(join(repo, 'labs', 'rate-limiter'))).toEqual([]);
  });
});

describe('pnpm lab <lab> --watch', () => {
  it('runs the spec, runs it again when a file in the lab changes, and stops cleanly on Ctrl-C', async () => {
    const watching = /Watching labs\/rate-limiter for changes/g;
    const watch = startLab(['rate-limiter', '--solution', '--watch'], { env });
    onTestFailed(() => watch.interrupt());
    // An untracked file: saving it is a change in the lab, and it never touches the starter's files.
    const probe = join(repo, 'labs', 'rate-limiter', `watch-probe-${process.pid}.txt`);
    try {
      await watch.waitFor(watching);
      expect(watch.output()).toMatch(/All \d+ tests pass/);
      writeFileSync(probe, 'saved\n');
      await watch.waitFor(new RegExp(`watch-probe-${process.pid}\\.txt changed[\\s\\S]*${watching.source}`));
      expect(watch.output().match(watching)).toHaveLength(2);
    } finally {
      rmSync(probe, { force: true });
    }
    watch.interrupt();
    const r = await watch.result;
    expect(r.code).toBe(0);
    expect(r.out).toContain('Stopped watching.');
    // The spec runs it started (vitest and its workers) are gone too.
    expect(processesOf(join(repo, 'labs', 'rate-limiter'), { specRunOf: watch.pid })).toEqual([]);
  });
});

describe('pnpm lab in a terminal, without arguments', () => {
  it('offers a menu of the labs, then what to do with the one picked; Ctrl-C leaves without running anything', async () => {
    const menu = startLab([], { env, terminal: true });
    onTestFailed(() => menu.interrupt());
    await menu.waitFor(/Which lab\?[\s\S]*2\. n-plus-one/);
    expect(menu.output()).toMatch(/●\s+1\. rate-limiter/); // the first lab is picked to start with
    menu.type('\u001b[B'); // arrow down
    await menu.waitFor(/●\s+2\. n-plus-one/);
    menu.type('\r');
    await menu.waitFor(/n-plus-one: what now\?[\s\S]*Run the spec against my code/);
    menu.type('\u0003'); // Ctrl-C
    const r = await menu.result;
    expect(r.code).toBe(0);
    expect(r.out).toContain('Nothing run.');
    expect(r.out).not.toContain('Baseline');
  });
});
