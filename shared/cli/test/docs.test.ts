/**
 * The README parts that the lab manifests already say (the root lab table, each lab's hints) must
 * match them: a hint is edited in package.json, and `lab docs` writes it out.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { outlineProblem, README_OUTLINE, syncDocs } from '../src/docs.ts';
import { listLabs } from '../src/labs.ts';
import { repo } from './helpers.ts';

describe('the READMEs and the lab manifests', () => {
  it('agree: every generated block is present and current (run `lab docs` after editing a manifest)', () => {
    const results = syncDocs(repo, listLabs(repo), false);
    const stale = results.filter((r) => r.state !== 'current').map((r) => `${r.file}: ${r.state}`);
    expect(stale).toEqual([]);
    expect(results.length).toBe(listLabs(repo).length + 1);
  });
});

describe('the README outline', () => {
  it('every lab README has the outline headings, in order, and nothing else at that level', () => {
    const problems = listLabs(repo).flatMap((lab) => {
      const problem = outlineProblem(readFileSync(join(lab.dir, 'README.md'), 'utf8'));
      return problem ? [`${lab.slug}: ${problem}`] : [];
    });
    expect(problems).toEqual([]);
  });

  it('the check can fail: a missing, an extra and a moved heading are each named', () => {
    const good = README_OUTLINE.map((h) => `## ${h}\n\ntext\n`).join('\n');
    expect(outlineProblem(good)).toBeUndefined();
    expect(outlineProblem(good.replace('## Sources\n', ''))).toMatch(/lacks .*Sources/);
    expect(outlineProblem(`${good}\n## The solution, in short\n`)).toMatch(/outside the outline/);
    const [first, second, ...rest] = README_OUTLINE;
    const swapped = [second, first, ...rest].map((h) => `## ${h}\n`).join('\n');
    expect(outlineProblem(swapped)).toMatch(/out of order/);
    expect(outlineProblem(`${good}\n\`\`\`md\n## In a code block\n\`\`\`\n`)).toBeUndefined();
  });

  it('the scaffold of `lab new` starts with the outline', () => {
    const template = readFileSync(join(repo, 'shared', 'cli', 'templates', 'lab', 'README.md.tmpl'), 'utf8');
    expect(outlineProblem(template)).toBeUndefined();
  });
});
