/**
 * forkServers' child outlives nothing: when the load script that forked it is killed outright
 * (SIGKILL, a CI job's timeout), the child notices its IPC channel close and exits within seconds,
 * instead of serving on alone.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it, onTestFinished } from 'vitest';

const isRunning = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('forkServers', () => {
  it("a servers child exits within 5 s of its load script's SIGKILL", async () => {
    const script = `
      const { forkServers } = await import(${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)});
      const servers = await forkServers(new URL(${JSON.stringify(new URL('./fixtures/listening-servers.ts', import.meta.url).href)}), {});
      const { execSync } = await import('node:child_process');
      // The child is this process's only child node process.
      console.log(execSync('pgrep -P ' + process.pid + ' -f servers-child').toString().trim().split('\\n')[0]);
      setInterval(() => {}, 1000);`;
    // A file, not -e: fork() hands the parent's flags (-e's --input-type) on to the child.
    const dir = mkdtempSync(join(tmpdir(), 'bench-orphan-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'load-script.mjs');
    writeFileSync(file, script);
    const parent = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(createInterface({ input: parent.stdout! }), 'line')) as [string];
    const child = Number(line);
    expect(child).toBeGreaterThan(0);
    expect(isRunning(child)).toBe(true);
    parent.kill('SIGKILL');
    let running = true;
    for (let i = 0; running && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      running = isRunning(child);
    }
    if (running) process.kill(child, 'SIGKILL');
    expect(running, 'the servers child still ran 5 s after its parent was killed').toBe(false);
  }, 20_000);
});
