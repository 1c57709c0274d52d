/**
 * Whose code a bench row ran. A learner (or a workshop host whose src/ holds their own solution) who
 * has edited the starter still gets the committed starter measured beside their code: the file as git
 * has it at HEAD is written beside theirs (so its relative imports resolve), imported, and removed at
 * once, the way `lab check` materialises a wrong fix.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** One version of the learner's file: its row name and the module. */
export interface StarterVersion<M> {
  /** "starter" (the committed file) or "your code" (the edited one). */
  name: 'starter' | 'your code';
  module: M;
}

/** True when git sees `file` (a path or file URL) differ from HEAD. False outside a git checkout. */
export function starterEdited(file: string | URL): boolean {
  const path = typeof file === 'string' ? file : fileURLToPath(file);
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dirname(path), stdio: 'ignore' });
  try {
    git('rev-parse', '--verify', '--quiet', 'HEAD');
  } catch {
    return false; // not a checkout (or no commit yet): nothing to compare with
  }
  try {
    git('diff', '--quiet', 'HEAD', '--', basename(path));
    return false;
  } catch (error) {
    // `git diff --quiet` exits 1 for a difference; anything else is "cannot tell".
    return (error as { status?: number }).status === 1;
  }
}

/** One version of the learner's file as a file: its row name and where it is (for a child process to load). */
export interface StarterFile {
  /** "starter" (the committed file) or "your code" (the edited one). */
  name: 'starter' | 'your code';
  /** The file's path. */
  path: string;
}

/**
 * The versions of the learner's file as files, for a script that hands a path to a child process (a
 * worker forked per target): the committed starter, and the learner's file as "your code" when it
 * differs from it. The committed starter is written beside the learner's file (so its relative imports
 * resolve) and stays there until the result is disposed: `await using files = await starterFiles(url)`.
 */
export async function starterFiles(file: URL): Promise<{ versions: StarterFile[] } & AsyncDisposable> {
  const path = fileURLToPath(file);
  if (!starterEdited(path)) return { versions: [{ name: 'starter', path }], async [Symbol.asyncDispose]() {} };
  const committed = execFileSync('git', ['show', `HEAD:./${basename(path)}`], {
    cwd: dirname(path),
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  const beside = join(dirname(path), `.pristine-${process.pid}-${basename(path)}`);
  writeFileSync(beside, committed);
  return {
    versions: [
      { name: 'starter', path: beside },
      { name: 'your code', path },
    ],
    async [Symbol.asyncDispose]() {
      rmSync(beside, { force: true });
    },
  };
}

/**
 * The versions of the learner's file to measure, as modules (see {@link starterFiles}); the committed
 * starter's copy is removed once imported. `load` imports a module from a URL (pass
 * `(url) => import(url.href)`, so the import is resolved where the caller lives).
 *
 * ```ts
 * const versions = await starterVersions(new URL('../src/rate-limiter.ts', import.meta.url), (u) => import(u.href));
 * for (const { name, module } of versions) targets[name] = module.createRateLimiter;
 * ```
 */
export async function starterVersions<M>(file: URL, load: (url: URL) => Promise<M>): Promise<StarterVersion<M>[]> {
  await using files = await starterFiles(file);
  const versions: StarterVersion<M>[] = [];
  for (const { name, path } of files.versions) versions.push({ name, module: await load(pathToFileURL(path)) });
  return versions;
}
