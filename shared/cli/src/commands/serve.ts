/**
 * `lab serve <slug>` and `lab bench <slug>`: run the lab's own script (src/main.ts, load/bench.ts) in a
 * child process group. Ctrl-C reaches the child once, through us; the group is killed if it does not
 * stop within a few seconds, so nothing is left running.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DistanceError, type Distances, openDistance, parseDistances } from '@labs/bench/distance';
import type { LabPackage } from '@labs/test-kit';
import { onInterrupt, spawnGroup } from '../child.ts';
import { labServices, releaseServices } from '../services.ts';
import { c, say, UserError } from '../ui.ts';

/** Runs `script` of `lab` with Node (which strips the types itself), resolving the lab's `#` imports to solution/ when asked. */
/** The lab kit's `lab serve` entry: it starts the lab folder's `server/lab.ts` (see @labs/lab-kit). */
export const SERVE_ENTRY = fileURLToPath(import.meta.resolve('@labs/lab-kit/serve'));

/**
 * Runs `script` (a file, with `args`) for `lab` in Node (which strips the types itself), with the
 * lab's `#` imports resolved to solution/ when asked.
 */
export async function runLabScript(
  lab: LabPackage,
  script: string,
  options: {
    args?: string[];
    solution?: boolean;
    env?: NodeJS.ProcessEnv;
    /** Exit code after Ctrl-C: 0 where Ctrl-C is the normal way to stop (serve). */
    interruptedCode?: number;
    /** Services to put at a distance: latency proxies in this process, the child pointed at them. */
    latency?: Distances;
  } = {},
): Promise<number> {
  const file = isAbsolute(script) ? script : join(lab.dir, script);
  if (!existsSync(file)) throw new UserError(`${lab.slug} has no ${script} yet.`, 1);
  const args = [...(options.solution ? ['--conditions=lab-solution'] : []), file, ...(options.args ?? [])];
  let interrupted = false;
  let child: ReturnType<typeof spawnGroup> | undefined;
  const release = onInterrupt(() => {
    interrupted = true;
    void child?.stop();
  });
  let distance: Awaited<ReturnType<typeof openDistance>> | undefined;
  try {
    const env = await labServices(lab);
    if (interrupted) return 130;
    if (options.latency) {
      distance = await openDistance(options.latency, env);
      for (const line of distance.describe()) say(c.cyan(line));
    }
    child = spawnGroup(process.execPath, args, {
      cwd: lab.dir,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        ...env,
        ...distance?.env,
        LAB_TARGET: options.solution ? 'solution' : 'starter',
        ...options.env,
      },
    });
    const code = await child.exited;
    if (interrupted) {
      say(c.dim(`Stopped ${lab.slug}.`));
      return options.interruptedCode ?? 130;
    }
    return code;
  } finally {
    release();
    if (distance) {
      for (const line of await distance.applied()) say(c.dim(line));
      await distance.close();
    }
    await releaseServices();
  }
}

/**
 * Reads `lab serve --latency` (`postgres=1ms,redis=0.5ms`) for `lab`: a malformed value, a service the
 * proxy cannot stand in front of, or one the lab does not use is a UserError (exit 2) saying which.
 */
export function latencyOption(raw: string | undefined, lab: LabPackage): Distances | undefined {
  if (raw === undefined) return undefined;
  let distances: Distances;
  try {
    distances = parseDistances(raw);
  } catch (error) {
    if (error instanceof DistanceError) throw new UserError(`--latency: ${error.message}`);
    throw error;
  }
  const used: readonly string[] = lab.lab.services;
  const unused = Object.keys(distances).filter((kind) => !used.includes(kind));
  if (unused.length > 0) {
    throw new UserError(
      `--latency: ${lab.slug} does not use ${unused.join(', ')}; ${used.length > 0 ? `it uses ${used.join(', ')}` : 'it uses no service'}.`,
    );
  }
  return distances;
}

/**
 * `lab bench --open`: opens the HTML report the run wrote (since `startedAt`, epoch ms) where a desktop
 * can show it (macOS, or a DISPLAY / WAYLAND_DISPLAY), and prints its path otherwise.
 */
export function openReport(lab: LabPackage, startedAt: number): void {
  const file = join(lab.dir, 'load', 'results', `${lab.slug}.html`);
  if (!existsSync(file) || statSync(file).mtimeMs < startedAt) {
    say(c.yellow(`This run wrote no report (${file}).`));
    return;
  }
  const opener =
    process.platform === 'darwin'
      ? 'open'
      : process.platform === 'linux' && (process.env.DISPLAY || process.env.WAYLAND_DISPLAY)
        ? 'xdg-open'
        : undefined;
  if (!opener) {
    say(`Report: ${file} (no desktop here to open it in; copy it to one, it needs no network)`);
    return;
  }
  const viewer = spawn(opener, [file], { detached: true, stdio: 'ignore' });
  viewer.on('error', () => say(`Could not run ${opener}; the report is ${file}`));
  viewer.unref();
  say(`Opening ${file}`);
}
