/**
 * The vitest config every lab uses. `LAB_TARGET=solution` points the lab's `#` imports at solution/
 * instead of src/, so the same spec runs against the learner's code and the reference.
 */
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { currentTarget, type LabTarget } from '@labs/lab-kit';
import { defineConfig, type ViteUserConfig } from 'vitest/config';
import { readLabPackage } from './lab-manifest.ts';

/**
 * Turns the lab's package.json `imports` into vite aliases for one target: the entry's `lab-solution`
 * path for the solution, its `default` path otherwise. Node reads the same field with
 * `--conditions=lab-solution`, so there is one source of truth for the switch.
 *
 * `wrongFix` (a path in the lab, from `LAB_WRONG_FIX`) stands in for the learner's exercise file:
 * how `lab check` runs the spec against each of the lab's wrong fixes (test/wrong-fixes/).
 */
export function exerciseAliases(labDir: string, target: LabTarget, wrongFix = process.env.LAB_WRONG_FIX) {
  const { imports = {}, lab } = readLabPackage(labDir);
  const exercise = resolve(labDir, lab.exercise[0]!);
  return Object.entries(imports).map(([specifier, entry]) => {
    const path =
      typeof entry === 'string'
        ? entry
        : target === 'solution'
          ? (entry['lab-solution'] ?? entry.default)
          : entry.default;
    if (!path) throw new Error(`package.json imports["${specifier}"] has no default path`);
    const replacement = resolve(labDir, path);
    return {
      find: specifier,
      replacement: wrongFix && replacement === exercise ? resolve(labDir, wrongFix) : replacement,
    };
  });
}

/** The lab's vitest config: exercise switch, shared services set up once, generous hook timeouts. */
export function defineLabConfig(labDir = process.cwd(), extra: ViteUserConfig = {}): ViteUserConfig {
  const target = currentTarget();
  return defineConfig({
    ...extra,
    resolve: { alias: exerciseAliases(labDir, target) },
    test: {
      include: ['test/**/*.test.ts'],
      globalSetup: [fileURLToPath(new URL('./global-setup.ts', import.meta.url))],
      // Tests that talk to real servers need more than the 5 s default, but never hang a run.
      testTimeout: 20_000,
      hookTimeout: 60_000,
      pool: 'forks',
      env: { LAB_TARGET: target },
      ...extra.test,
    },
  });
}
