/** `lab docs [--check]`: writes the README parts the manifests already say (lab table, hints). */
import type { LabPackage } from '@labs/test-kit';
import { syncDocs } from '../docs.ts';
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
  if (bad === 0) say(c.green(`The READMEs agree with the ${labs.length} lab manifests.`));
  return bad === 0 ? 0 : 1;
}
