/**
 * `lab reset <slug> [--yes]`: puts the starter back (the manifest's exercise files, from git's HEAD),
 * after asking. Without a terminal to ask in, it needs --yes: a script must say so explicitly.
 */
import { spawnSync } from 'node:child_process';
import { join, relative } from 'node:path';
import { confirm, isCancel } from '@clack/prompts';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { forgetProgress } from '../progress.ts';
import { c, LAB, say, UserError } from '../ui.ts';

const interactive = () => Boolean(process.stdin.isTTY && process.stdout.isTTY);

/** The exercise files git reports as changed since HEAD (undefined when git cannot tell). */
function changedFiles(lab: LabPackage): string[] | undefined {
  const diff = spawnSync('git', ['diff', '--name-only', 'HEAD', '--', ...lab.lab.exercise], {
    cwd: lab.dir,
    encoding: 'utf8',
  });
  if (diff.status !== 0) return undefined;
  return diff.stdout.split('\n').filter(Boolean);
}

export async function reset(root: string, lab: LabPackage, options: { yes: boolean }): Promise<number> {
  const files = lab.lab.exercise;
  const shown = files.map((f) => relative(root, join(lab.dir, f)));
  const changed = changedFiles(lab);
  if (changed === undefined)
    throw new UserError(
      `git cannot compare ${shown.join(', ')} with HEAD here; is this a git clone of the repository?`,
      1,
    );
  if (!options.yes) {
    if (!interactive()) {
      throw new UserError(
        `reset overwrites your work in ${shown.join(', ')}. Run it in a terminal to confirm, or add --yes: ${LAB} reset ${lab.slug} --yes`,
      );
    }
    const answer = await confirm({
      message: `Put the starter back in ${shown.join(', ')}? ${changed.length > 0 ? 'Your edits there will be lost.' : '(They are unchanged.)'}`,
      initialValue: false,
    });
    if (isCancel(answer) || !answer) {
      say('Nothing changed.');
      return 0;
    }
  }
  const checkout = spawnSync('git', ['checkout', 'HEAD', '--', ...files], { cwd: lab.dir, encoding: 'utf8' });
  if (checkout.status !== 0)
    throw new UserError(`git could not restore the starter: ${(checkout.stderr || '').trim()}`, 1);
  forgetProgress(root, lab.slug);
  say(
    `${c.green('✓')} ${lab.slug}: the starter is back in ${shown.join(', ')}${changed.length === 0 ? ' (it was unchanged)' : ''}; progress and hints for it are cleared.`,
  );
  say(`Run ${c.cyan(`${LAB} ${lab.slug}`)} to see the challenges fail again.`);
  return 0;
}
