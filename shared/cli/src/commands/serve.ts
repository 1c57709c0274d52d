/**
 * `lab serve <slug>` and `lab bench <slug>`: run the lab's own script (src/main.ts, load/bench.ts) in a
 * child process group. Ctrl-C reaches the child once, through us; the group is killed if it does not
 * stop within a few seconds, so nothing is left running.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
  try {
    const env = await labServices(lab);
    if (interrupted) return 130;
    child = spawnGroup(process.execPath, args, {
      cwd: lab.dir,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, ...env, LAB_TARGET: options.solution ? 'solution' : 'starter', ...options.env },
    });
    const code = await child.exited;
    if (interrupted) {
      say(c.dim(`Stopped ${lab.slug}.`));
      return options.interruptedCode ?? 130;
    }
    return code;
  } finally {
    release();
    await releaseServices();
  }
}
