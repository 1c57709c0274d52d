/** Runs the command line as a learner does: a separate process, from a folder, without a terminal. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository this package lives in. */
export const repo = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');
const bin = fileURLToPath(new URL('../bin/lab.js', import.meta.url));

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr together */
  out: string;
  ms: number;
}

/** `node shared/cli/bin/lab.js ...args` in `cwd` (the repository root by default). */
export function lab(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: options.cwd ?? repo,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end();
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, out: stdout + stderr, ms: Date.now() - started }));
  });
}

/** True when the output looks like a Node stack trace (which a user mistake must never print). */
export const hasStackTrace = (text: string) => /^\s+at .+\(.+:\d+:\d+\)$/m.test(text) || /^\s+at .+:\d+:\d+$/m.test(text);
