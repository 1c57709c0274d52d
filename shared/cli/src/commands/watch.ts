/**
 * `lab <slug> --watch`: runs the spec, then again on every save of the lab's files (like rustlings'
 * watch mode). Services are resolved once and shared by every run. Ctrl-C stops the run in progress,
 * the watcher and the services, and exits cleanly.
 */
import { relative, sep } from 'node:path';
import { watch } from 'chokidar';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { onInterrupt } from '../child.ts';
import type { Target } from '../run-spec.ts';
import { labServices, releaseServices } from '../services.ts';
import { c, say } from '../ui.ts';
import { reportRun } from './run.ts';

/** Folders whose changes never call for a re-run: dependencies, our own reports, load results. */
const IGNORED = ['node_modules', '.lab', '.turbo', 'results'];

export async function watchLab(root: string, labs: LabPackage[], lab: LabPackage, target: Target): Promise<number> {
  let stopping = false;
  let current: AbortController | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const release = onInterrupt(() => {
    stopping = true;
    current?.abort();
    stopped();
  });
  try {
    const services: string[] = [];
    const env = await labServices(lab, { log: (line) => services.push(line), embeddedPerTestFile: true });
    if (stopping) return 0;
    const watcher = watch(lab.dir, {
      ignoreInitial: true,
      ignored: (path) =>
        relative(lab.dir, path)
          .split(sep)
          .some((part) => IGNORED.includes(part) || (part.startsWith('.') && part.length > 1)),
    });
    let running: Promise<unknown> | undefined;
    let again = false;
    let changed: string | undefined;
    const run = async () => {
      if (running) {
        again = true; // one more run once this one ends, with whatever was saved meanwhile
        return;
      }
      do {
        again = false;
        if (process.stdout.isTTY) process.stdout.write('\x1Bc');
        if (changed) say(c.dim(`${changed} changed`));
        current = new AbortController();
        running = reportRun(root, labs, lab, target, { env, services, signal: current.signal });
        await running;
        running = undefined;
        if (stopping) return;
        say('');
        say(c.dim(`Watching labs/${lab.slug} for changes. Save a file to run again; Ctrl-C to stop.`));
      } while (again && !stopping);
    };
    let timer: NodeJS.Timeout | undefined;
    watcher.on('all', (_event, path) => {
      changed = relative(root, path);
      clearTimeout(timer);
      timer = setTimeout(() => void run(), 150); // an editor's save is often several events
    });
    await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
    void run();
    await done;
    clearTimeout(timer);
    await watcher.close();
    await running;
    say('');
    say(c.dim('Stopped watching.'));
    return 0;
  } finally {
    release();
    await releaseServices();
  }
}
