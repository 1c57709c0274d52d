/**
 * `lab docs [--check]`: writes the README parts the manifests already say (lab table, hints), and checks
 * that every lab README keeps the one outline.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { outlineProblem, syncDocs } from '../docs.ts';
import { c, LAB, say } from '../ui.ts';

export function docs(root: string, labs: LabPackage[], options: { check: boolean }): number {
  const results = syncDocs(root, labs, !options.check);
  let bad = 0;
  for (const { file, state } of results) {
    if (state === 'current') continue;
    if (state === 'written') say(`${c.green('✓')} ${file}: rewritten from the manifests`);
    else {
      bad++;
      const why =
        state === 'drifted' ? `differs from the manifests: run ${LAB} docs` : 'has no generated-block markers';
      say(`${c.red('✗')} ${file} ${why}`);
    }
  }
  for (const lab of labs) {
    const problem = outlineProblem(readFileSync(join(lab.dir, 'README.md'), 'utf8'));
    if (!problem) continue;
    bad++;
    say(`${c.red('✗')} labs/${lab.slug}/README.md ${problem} (CONTRIBUTING.md, "The README")`);
  }
  if (bad === 0) say(c.green(`The READMEs agree with the ${labs.length} lab manifests and keep the one outline.`));
  return bad === 0 ? 0 : 1;
}
