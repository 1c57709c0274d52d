/**
 * starterVersions: the committed starter measured beside the learner's edited file. A throwaway git
 * repository plays the lab: a file committed, then edited.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { starterEdited, starterFiles, starterVersions } from '../src/index.ts';

const repo = mkdtempSync(join(tmpdir(), 'bench-pristine-'));
afterAll(() => rmSync(repo, { recursive: true, force: true }));
const git = (...args: string[]) => execFileSync('git', args, { cwd: repo, stdio: 'ignore' });
const src = join(repo, 'src');
mkdirSync(src);
// The starter imports a sibling, as a lab's does: the committed copy must resolve it from beside the file.
writeFileSync(join(src, 'shared.mjs'), "export const label = 'shared';\n");
writeFileSync(
  join(src, 'limiter.mjs'),
  "import { label } from './shared.mjs';\nexport const who = 'committed ' + label;\n",
);
git('init', '-q');
git('add', '.');
git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'starter');
const file = pathToFileURL(join(src, 'limiter.mjs'));
let imports = 0;
/** A fresh import each time (a query string), as two bench runs in two processes would see. */
const load = (url: URL) => import(`${url.href}?n=${++imports}`) as Promise<{ who: string }>;

describe('whose code a bench row ran', () => {
  it('an untouched starter is measured once, as "starter"', async () => {
    expect(starterEdited(file)).toBe(false);
    const versions = await starterVersions(file, load);
    expect(versions.map((v) => [v.name, v.module.who])).toEqual([['starter', 'committed shared']]);
  });

  it('an edited starter is "your code", with the committed starter beside it, and nothing is left on disk', async () => {
    writeFileSync(join(src, 'limiter.mjs'), "export const who = 'edited';\n");
    expect(starterEdited(file)).toBe(true);
    const versions = await starterVersions(file, load);
    expect(versions.map((v) => [v.name, v.module.who])).toEqual([
      ['starter', 'committed shared'],
      ['your code', 'edited'],
    ]);
    expect(readdirSync(src).sort()).toEqual(['limiter.mjs', 'shared.mjs']);
  });

  it('as files for a child process: the committed copy lives beside the edited file until disposed', async () => {
    writeFileSync(join(src, 'limiter.mjs'), "export const who = 'edited again';\n");
    let pristine: string;
    {
      await using files = await starterFiles(file);
      expect(files.versions.map((v) => v.name)).toEqual(['starter', 'your code']);
      pristine = files.versions[0]!.path;
      const [starter, yours] = await Promise.all(files.versions.map((v) => load(pathToFileURL(v.path))));
      expect([starter!.who, yours!.who]).toEqual(['committed shared', 'edited again']);
      expect(readdirSync(src)).toContain(pristine.slice(src.length + 1));
    }
    expect(readdirSync(src).sort()).toEqual(['limiter.mjs', 'shared.mjs']);
  });

  it('outside a git checkout it cannot tell, and measures the file as the starter', async () => {
    const loose = mkdtempSync(join(tmpdir(), 'bench-loose-'));
    try {
      writeFileSync(join(loose, 'limiter.mjs'), "export const who = 'loose';\n");
      expect(starterEdited(join(loose, 'limiter.mjs'))).toBe(false);
    } finally {
      rmSync(loose, { recursive: true, force: true });
    }
  });
});
