/**
 * Child processes that never outlive the command line. Each child runs in its own process group, so a
 * Ctrl-C reaches it exactly once (from us, not also from the terminal), and the whole group (vitest and
 * its workers, a server and what it forked) is stopped together, by force after a grace period.
 */
import { spawn, type SpawnOptions } from 'node:child_process';

/** How long a child may take to clean up after SIGINT before the group is killed. */
const GRACE_MS = 5000;

function signalGroup(pid: number | undefined, signal: NodeJS.Signals) {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** A running child in its own process group. */
export interface GroupChild {
  /** Resolves with the exit code (128 + signal number style codes for signals). */
  exited: Promise<number>;
  /** Asks the group to stop (SIGINT), then kills it after the grace period; resolves when it has exited. */
  stop(): Promise<number>;
  /** Output streams when stdio is 'pipe'. */
  stdout: NodeJS.ReadableStream | null;
  stderr: NodeJS.ReadableStream | null;
}

/** Spawns `command` in a new process group; it is stopped when this process exits. */
export function spawnGroup(command: string, args: string[], options: SpawnOptions): GroupChild {
  const child = spawn(command, args, { ...options, detached: true });
  let exitCode: number | undefined;
  const onExit = () => signalGroup(child.pid, 'SIGKILL');
  process.on('exit', onExit);
  const exited = new Promise<number>((resolve) => {
    child.on('error', () => {
      exitCode = 1;
      resolve(exitCode);
    });
    child.on('close', (code, signal) => {
      process.off('exit', onExit);
      exitCode = code ?? (signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 1);
      resolve(exitCode);
    });
  });
  let stopping: Promise<number> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (exitCode !== undefined) return exitCode;
      signalGroup(child.pid, 'SIGINT');
      const timer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), GRACE_MS);
      const code = await exited;
      clearTimeout(timer);
      // Workers the leader left behind get the same end.
      signalGroup(child.pid, 'SIGKILL');
      return code;
    })());
  return { exited, stop, stdout: child.stdout, stderr: child.stderr };
}

/**
 * Calls `onInterrupt` on Ctrl-C (SIGINT), SIGTERM or SIGHUP (a closed terminal window) instead of
 * dying, until the returned function is called. A second signal while stopping exits at once.
 */
export function onInterrupt(onInterrupt: () => void): () => void {
  let count = 0;
  const handler = () => {
    count++;
    if (count > 1) process.exit(130);
    onInterrupt();
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}
