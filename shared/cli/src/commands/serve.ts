/**
 * `lab serve <slug>` and `lab bench <slug>`: run the lab's own script (src/main.ts, load/bench.ts) in a
 * child process group. Ctrl-C reaches the child once, through us; the group is killed if it does not
 * stop within a few seconds, so nothing is left running.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DistanceError, type Distances, openDistance, parseDistances } from '@labs/bench/distance';
import type { LabPackage } from '@labs/lab-kit/manifest';
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
  const opener = reportOpener(file, {
    platform: process.platform,
    env: process.env,
    wsl: process.platform === 'linux' && /microsoft/i.test(readIfThere('/proc/version')),
    onPath: (name) => spawnSync('sh', ['-c', `command -v ${name}`]).status === 0,
  });
  if (!opener) {
    say(`Report: ${file} (no desktop here to open it in; copy it to one, it needs no network)`);
    return;
  }
  const [command, ...args] = opener;
  const viewer = spawn(command!, args, { detached: true, stdio: 'ignore' });
  viewer.on('error', () => say(`Could not run ${command}; the report is ${file}`));
  viewer.unref();
  say(`Opening ${file}`);
}

/** Where {@link reportOpener} looks: the platform, the environment, and what is on PATH. */
export interface Desktop {
  platform: NodeJS.Platform;
  env: NodeJS.ProcessEnv;
  /** Linux under WSL 2 (Windows' browser opens the file through Windows' own path to it). */
  wsl: boolean;
  onPath(name: string): boolean;
}

/**
 * The command that opens `file` in the desktop's browser: `open` on macOS, `xdg-open` on a Linux desktop,
 * `wslview` (wslu) or Windows' `explorer.exe` under WSL 2, `start` on Windows; undefined with no desktop
 * (a server, a container, CI), where the path is printed instead.
 */
export function reportOpener(file: string, desktop: Desktop): string[] | undefined {
  if (desktop.platform === 'darwin') return ['open', file];
  if (desktop.platform === 'win32') return ['cmd', '/c', 'start', '""', file];
  if (desktop.wsl) {
    if (desktop.onPath('wslview')) return ['wslview', file];
    // explorer.exe takes a Windows path: \\wsl.localhost\<distro>\... is what wslpath -w prints.
    if (desktop.onPath('explorer.exe') && desktop.onPath('wslpath'))
      return ['sh', '-c', 'explorer.exe "$(wslpath -w "$1")"', 'open-report', file];
    return undefined;
  }
  if (desktop.env.DISPLAY || desktop.env.WAYLAND_DISPLAY) return ['xdg-open', file];
  return undefined;
}

const readIfThere = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};
