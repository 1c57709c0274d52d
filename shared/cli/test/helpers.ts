/** Runs the command line as a learner does: a separate process, from a folder, without a terminal. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';

/** The repository this package lives in. */
export const repo = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');
const bin = fileURLToPath(new URL('../bin/lab.js', import.meta.url));

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr together */
  out: string;
}

/** `node shared/cli/bin/lab.js ...args` in `cwd` (the repository root by default). */
export function lab(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: options.cwd ?? repo,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined, LAB_COMMAND: undefined, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end();
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, out: stdout + stderr }));
  });
}

/** True when the output looks like a Node stack trace (which a user mistake must never print). */
export const hasStackTrace = (text: string) =>
  /^\s+at .+\(.+:\d+:\d+\)$/m.test(text) || /^\s+at .+:\d+:\d+$/m.test(text);

/** Output without terminal control sequences (colours, cursor moves), as a reader sees the text. */
const plain = (text: string) => stripVTControlCharacters(text).replaceAll('\r', '');

/** A command line left running (serve, bench, --watch), to be watched and then interrupted. */
export interface Running {
  /** The command line's process id. */
  pid: number;
  /** Everything printed so far, stdout and stderr together. */
  output(): string;
  /**
   * Resolves with the first match of `pattern` in the output; rejects, with what was printed, once the
   * command line has exited without printing it. There is no deadline of its own: how long a command
   * takes depends on the machine, so the test's timeout is the only bound, and only against a hang.
   */
  waitFor(pattern: RegExp): Promise<RegExpMatchArray>;
  /** Sends `signal` (Ctrl-C by default) as a terminal would, to the command line's process only. */
  interrupt(signal?: NodeJS.Signals): void;
  /** Types `keys` (with `terminal: true`: arrow keys, Enter '\r', Ctrl-C '\x03'). */
  type(keys: string): void;
  /** The end of the run. */
  result: Promise<Result>;
}

/** Starts `node shared/cli/bin/lab.js ...args` and returns at once. */
export function startLab(
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv /** Run it in a terminal (a pseudo-terminal from util-linux's `script`), for prompts. */;
    terminal?: boolean;
  } = {},
): Running {
  const quoted = [process.execPath, bin, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const [command, commandArgs]: [string, string[]] = options.terminal
    ? ['script', ['-qfec', `stty cols 120 rows 40; exec ${quoted}`, '/dev/null']]
    : [process.execPath, [bin, ...args]];
  const child = spawn(command, commandArgs, {
    cwd: repo,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined, LAB_COMMAND: undefined, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  if (!options.terminal) child.stdin.end();
  let stdout = '';
  let stderr = '';
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (which: 'stdout' | 'stderr') => (d: Buffer) => {
    if (which === 'stdout') stdout += d.toString();
    else stderr += d.toString();
    out += d.toString();
    for (const listener of listeners) listener();
  };
  child.stdout.on('data', onData('stdout'));
  child.stderr.on('data', onData('stderr'));
  const result = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      for (const listener of listeners) listener();
      resolve({ code, stdout, stderr, out: plain(out) });
    });
  });
  return {
    pid: child.pid!,
    output: () => plain(out),
    type: (keys) => child.stdin.write(keys),
    result,
    interrupt: (signal = 'SIGINT') => child.kill(signal),
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = plain(out).match(pattern);
          if (match) return done(() => resolve(match));
          if (child.exitCode !== null || child.signalCode !== null)
            done(() =>
              reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before printing ${pattern}:\n${out}`)),
            );
        };
        const done = (settle: () => void) => {
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      }),
  };
}
