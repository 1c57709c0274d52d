/**
 * The README parts that the lab manifests already say (the root lab table, each lab's hints) must
 * match them: a hint is edited in package.json, and `lab docs` writes it out.
 */
import { describe, expect, it } from 'vitest';
import { syncDocs } from '../src/docs.ts';
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
