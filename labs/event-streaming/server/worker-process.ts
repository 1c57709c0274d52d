/**
 * Starting server/worker.ts as a child process, for the spec and the load script: they kill workers
 * for real (SIGKILL, SIGTERM) and stop the rest cleanly over IPC.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

/** Where a worker reads and writes, and which pipeline it runs. */
export interface WorkerOptions {
  /** The file that implements `#event-pipeline` (the starter, the solution, a wrong fix). */
  pipelineModule: string;
  databaseUrl: string;
  topic: string;
  deadLetterTopic: string;
  groupId: string;
  /** Extra environment (service URLs); the parent's environment is passed on too. */
  env?: NodeJS.ProcessEnv;
  /** How long it may take to join its group. */
  readyTimeoutMs?: number;
}

/** A worker process. */
export interface WorkerProcess extends AsyncDisposable {
  readonly child: ChildProcess;
  /** The exit signal or code, once the process has ended. */
  readonly exited: Promise<NodeJS.Signals | number | null>;
  /** Sends `signal` and waits for the process to end (SIGKILL after `graceMs` if it has not). */
  kill(signal: NodeJS.Signals, graceMs?: number): Promise<NodeJS.Signals | number | null>;
  /** Asks it to stop its projector cleanly (over IPC) and waits for it to exit. */
  stop(graceMs?: number): Promise<NodeJS.Signals | number | null>;
  /** The end of what it wrote to stderr, for failure messages. */
  stderr(): string;
}

const WORKER = join(import.meta.dirname, 'worker.ts');

/**
 * Starts a worker and resolves once it prints "ready" (its consumer has joined the group). Disposing
 * it SIGKILLs it if it is still running.
 */
export async function startWorker(options: WorkerOptions): Promise<WorkerProcess> {
  const timeoutMs = options.readyTimeoutMs ?? 20_000;
  // kafkajs 2.2.4 sets a timer Node 24 finds negative; the warning says nothing about the lab.
  const child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', WORKER], {
    cwd: join(import.meta.dirname, '..'),
    env: {
      ...process.env,
      ...options.env,
      PROJECTION_DATABASE_URL: options.databaseUrl,
      EVENTS_TOPIC: options.topic,
      DEAD_LETTER_TOPIC: options.deadLetterTopic,
      GROUP_ID: options.groupId,
      EVENT_PIPELINE_MODULE: options.pipelineModule,
    },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2000);
  });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? code));
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const waitOrKill = async (graceMs: number) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const how = await exited;
    clearTimeout(timer);
    return how;
  };
  const worker: WorkerProcess = {
    child,
    exited,
    kill(signal, graceMs = 15_000) {
      if (running()) child.kill(signal);
      return waitOrKill(graceMs);
    },
    stop(graceMs = 15_000) {
      if (running() && child.connected) child.send('stop');
      return waitOrKill(graceMs);
    },
    stderr: () => stderr.trim(),
    async [Symbol.asyncDispose]() {
      await worker.kill('SIGKILL');
    },
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the worker was not ready within ${timeoutMs} ms`)), timeoutMs);
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out = (out + chunk.toString()).slice(-100);
        if (out.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then((how) => {
        clearTimeout(timer);
        reject(new Error(`the worker exited (${how}) before it was ready: ${stderr.trim()}`));
      });
    });
  } catch (error) {
    await worker.kill('SIGKILL');
    throw error;
  }
  return worker;
}
