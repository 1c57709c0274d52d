/** `lab hint <slug>`: the next hint, one level at a time; the level is remembered per lab. */
import type { LabPackage } from '@labs/lab-kit/manifest';
import { readProgress, updateProgress } from '../progress.ts';
import { c, say } from '../ui.ts';

export function hint(root: string, lab: LabPackage): number {
  const hints = lab.lab.hints;
  if (hints.length === 0) {
    say(`${lab.slug} has no hints; its README walks through the fix.`);
    return 0;
  }
  const shown = readProgress(root)[lab.slug]?.hintLevel ?? 0;
  const level = Math.min(shown + 1, hints.length);
  updateProgress(root, lab.slug, { hintLevel: level });
  say(c.bold(`Hint ${level} of ${hints.length} for ${lab.slug}`));
  say(hints[level - 1]);
  say('');
  say(
    level < hints.length
      ? c.dim(`Run it again for hint ${level + 1}.`)
      : c.dim('That was the last hint; the README debrief explains the full solution.'),
  );
  return 0;
}
