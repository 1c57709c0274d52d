/** `pnpm lab` in a terminal: pick a lab, then what to do with it. */
import { cancel, intro, isCancel, select } from '@clack/prompts';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { readProgress, statusOf } from '../progress.ts';
import { c } from '../ui.ts';

/** What the learner picked: a command line to run, as if typed after `pnpm lab`. */
export async function menu(root: string, labs: LabPackage[]): Promise<string[] | undefined> {
  const progress = readProgress(root);
  intro(c.bold('Backend Labs'));
  const firstOpen = labs.find((l) => statusOf(progress, l.slug) !== 'solved');
  const slug = await select({
    message: 'Which lab?',
    initialValue: firstOpen?.slug,
    options: labs.map((l, i) => ({
      value: l.slug,
      label: `${String(i + 1).padStart(2)}. ${l.slug}`,
      hint: `${statusOf(progress, l.slug)} · ${l.lab.difficulty} · ${l.lab.topic}`,
    })),
  });
  if (isCancel(slug)) return cancelled();
  const solved = statusOf(progress, slug) === 'solved';
  const action = await select({
    message: `${slug}: what now?`,
    options: [
      { value: [slug], label: 'Run the spec against my code' },
      { value: [slug, '--watch'], label: 'Watch: run again on every save' },
      { value: ['hint', slug], label: 'Show the next hint' },
      { value: ['serve', slug], label: 'Start its server (for curl or a browser)' },
      { value: ['bench', slug], label: 'Benchmark starter and solution' },
      ...(solved ? [{ value: ['diff', slug], label: 'Compare my code with the reference solution' }] : []),
      { value: [slug, '--solution'], label: 'Run the spec against the reference solution' },
      { value: ['reset', slug], label: 'Put the starter back (asks first)' },
    ],
  });
  if (isCancel(action)) return cancelled();
  return action;
}

function cancelled(): undefined {
  cancel('Nothing run.');
  return undefined;
}
