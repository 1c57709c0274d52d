/**
 * The longest checks first, for `./lab test`. Turbo starts the tasks that are ready in no set order, so
 * the longest check (minutes, where most take seconds) could start last and end the run long after the
 * others. So `./lab test` lets turbo start every task at once and hands out its own slots
 * (`LABS_CONCURRENCY` of them) over a Unix socket named in `LABS_SLOTS`: a task asks with its package's
 * name, waits for the answer, and holds its slot while its connection is open, so a task that dies
 * frees its slot with its socket. Waiting tasks are served the longest first: what each took the last
 * time on this machine (`node_modules/.cache/labs/task-seconds.json`), or on a first run the figures
 * measured for a fresh clone (`task-seconds.json` beside this package).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * The first slots are handed out this long after the first task asks: turbo starts the tasks together,
 * but each loads the command line (and a shared package runs its compiler) before it asks, so without
 * the wait the quickest to start would go first, not the longest.
 */
const GATHER_MS = 2_000;

/** Seconds per task (package name), longest first; a task not named waits behind those that are. */
type Seconds = Record<string, number>;

const readSeconds = (file: string): Seconds => {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Seconds;
  } catch {
    return {};
  }
};

/** Where this machine keeps what each task took last time (ignored by git, kept by pnpm install). */
const historyFile = (root: string) => join(root, 'node_modules', '.cache', 'labs', 'task-seconds.json');
/** What each task took on a fresh clone's first run, measured on an idle two-core machine. */
const FIRST_RUN = join(import.meta.dirname, '..', 'task-seconds.json');

export interface Slots {
  /** The environment a task needs to find the slots. */
  env: { LABS_SLOTS: string };
  /** How many tasks wait for a slot now. */
  waiting(): number;
  /** Stops handing out slots and keeps what each task took, for the next run's order. */
  close(): Promise<void>;
}

/** Opens `limit` slots for the tasks of one `./lab test` run in `root`. */
export async function openSlots(root: string, limit: number): Promise<Slots> {
  const expected = { ...readSeconds(FIRST_RUN), ...readSeconds(historyFile(root)) };
  const took: Seconds = {};
  const waiting: { name: string; socket: Socket }[] = [];
  let running = 0;
  let gathered = false;
  let gathering: NodeJS.Timeout | undefined;

  const next = () => {
    if (!gathered) return;
    waiting.sort((a, b) => (expected[b.name] ?? 0) - (expected[a.name] ?? 0));
    while (running < limit && waiting.length > 0) {
      const { name, socket } = waiting.shift()!;
      running++;
      const started = performance.now();
      socket.once('close', () => {
        // A task may take a slot twice (a lab's check, then a second pass): its time is both.
        took[name] = (took[name] ?? 0) + Math.round((performance.now() - started) / 1000);
        running--;
        next();
      });
      socket.write('go\n');
    }
  };

  const server = createServer((socket) => {
    socket.setEncoding('utf8');
    let asked = '';
    const onData = (chunk: string) => {
      asked += chunk;
      if (!asked.includes('\n')) return;
      socket.off('data', onData);
      const entry = { name: asked.trim(), socket };
      waiting.push(entry);
      gathering ??= setTimeout(() => {
        gathered = true;
        next();
      }, GATHER_MS);
      // A task that gives up while it waits (Ctrl-C) leaves the queue.
      socket.once('close', () => {
        const at = waiting.indexOf(entry);
        if (at >= 0) waiting.splice(at, 1);
      });
      next();
    };
    socket.on('data', onData);
    socket.on('error', () => {});
  });
  const path = join(tmpdir(), `labs-slots-${process.pid}.sock`);
  rmSync(path, { force: true });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));

  return {
    env: { LABS_SLOTS: path },
    waiting: () => waiting.length,
    close: async () => {
      clearTimeout(gathering);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(path, { force: true });
      // Only tasks that ran: a result turbo replayed from its cache says nothing about the time.
      if (Object.keys(took).length === 0) return;
      const file = historyFile(root);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, `${JSON.stringify({ ...readSeconds(file), ...took }, null, 2)}\n`);
    },
  };
}

/**
 * Waits for a slot for the task `name` when `./lab test` hands them out (`LABS_SLOTS`), and holds it
 * until this process ends. Outside `./lab test` (a check run alone) there is nothing to wait for; a
 * slot server that cannot be reached is no reason to fail a check either.
 */
export async function takeSlot(name: string): Promise<void> {
  const path = process.env.LABS_SLOTS;
  // The task's slot covers all it starts: a process it runs (a test that runs `lab check` on a
  // fixture) must not queue behind it.
  delete process.env.LABS_SLOTS;
  if (!path) return;
  // Held open, but it must not keep this process alive once the task is done.
  (await askSlot(path, name))?.unref();
}

/** Asks the slot server at `path` for a slot for `name`: the connection that holds it once granted. */
export function askSlot(path: string, name: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.setEncoding('utf8');
    socket.once('data', () => resolve(socket));
    socket.once('connect', () => socket.write(`${name}\n`));
    socket.once('error', () => resolve(undefined));
  });
}

/**
 * `lab slot <command…>`: runs a shared package's tests in a slot of `./lab test` (its package.json's
 * `check` script), so they queue with the labs' checks instead of crowding the first minute. Exits with
 * the command's code; a signal to this process goes to the command.
 */
export async function runInSlot(command: string[], dir = process.cwd()): Promise<number> {
  const { name } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string };
  await takeSlot(name);
  return await new Promise<number>((resolve) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward);
    child.once('error', (error) => {
      process.stderr.write(`lab slot: ${command[0]}: ${error.message}\n`);
      resolve(127);
    });
    child.once('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}
