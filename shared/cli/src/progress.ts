/**
 * The learner's progress, kept in a git-ignored file at the repository root (.lab/progress.json).
 * Nothing is sent anywhere. `LABS_STATE_DIR` moves it (the CLI's own tests use a temporary folder).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export type LabStatus = 'not started' | 'in progress' | 'solved';

/** What we remember about one lab. */
export interface LabProgress {
  status: LabStatus;
  /** How many hints have been shown. */
  hintLevel: number;
  lastRun?: string;
}

export type Progress = Record<string, LabProgress>;

/** The folder holding the learner's local state: $LABS_STATE_DIR, else <repo>/.lab. */
export const stateDir = (root: string) =>
  process.env.LABS_STATE_DIR ? resolve(process.env.LABS_STATE_DIR) : join(root, '.lab');

const file = (root: string) => join(stateDir(root), 'progress.json');

/** Everything remembered so far; an empty record when there is no file yet (or it is unreadable). */
export function readProgress(root: string): Progress {
  try {
    return JSON.parse(readFileSync(file(root), 'utf8')) as Progress;
  } catch {
    return {};
  }
}

/** The lab's status from the learner's last run. */
export const statusOf = (progress: Progress, slug: string): LabStatus => progress[slug]?.status ?? 'not started';

function save(root: string, all: Progress) {
  mkdirSync(dirname(file(root)), { recursive: true });
  writeFileSync(file(root), `${JSON.stringify(all, null, 2)}\n`);
}

/** Merges `update` into the lab's entry and saves. */
export function updateProgress(root: string, slug: string, update: Partial<LabProgress>): LabProgress {
  const all = readProgress(root);
  const entry = { status: 'not started' as LabStatus, hintLevel: 0, ...all[slug], ...update };
  all[slug] = entry;
  save(root, all);
  return entry;
}

/** Forgets everything about one lab (after `lab reset`). */
export function forgetProgress(root: string, slug: string): void {
  const all = readProgress(root);
  if (!(slug in all)) return;
  delete all[slug];
  save(root, all);
}
