/**
 * The vitest config every lab uses. `LAB_TARGET=solution` points the lab's `#` imports at solution/
 * instead of src/, so the same spec runs against the learner's code and the reference.
 */
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { currentTarget, type LabTarget } from '@labs/lab-kit';
import { defineConfig, type ViteUserConfig } from 'vitest/config';
import { readLabPackage } from './lab-manifest.ts';

/** The shared packages' sources, wherever the repository is (vitest matches module paths). */
const SHARED_SOURCES = /\/shared\/(lab-kit|services|test-kit|bench)\/src\//;

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

/** One spec run of a batch (`LAB_RUNS`): its name, the target, and the wrong fix standing in, if any. */
export interface LabRun {
  name: string;
  target: LabTarget;
  /** A path in the lab that replaces the exercise file, as `LAB_WRONG_FIX` does for a single run. */
  wrongFix?: string;
}

/** The batch `lab check` asked for in `LAB_RUNS` (a JSON list of {@link LabRun}), if any. */
function batchRuns(): LabRun[] | undefined {
  const text = process.env.LAB_RUNS;
  return text ? (JSON.parse(text) as LabRun[]) : undefined;
}

/**
 * The lab's vitest config: exercise switch, shared services set up once, generous hook timeouts.
 *
 * With `LAB_RUNS` set (by `lab check`), the config holds one vitest project per run instead, each with
 * its own aliases (its target, or its wrong fix in place of the exercise) and its own environment, so
 * one vitest process runs a lab's starter, solution and wrong fixes: the process, its config and the
 * global set-up are paid once per check instead of once per run. Each run's spec file still runs in a
 * fork of its own (`pool: 'forks'`, isolated), so every run has its own module graph, as before.
 */
export function defineLabConfig(labDir = process.cwd(), extra: ViteUserConfig = {}): ViteUserConfig {
  const target = currentTarget();
  const runs = batchRuns();
  const test = {
    include: ['test/**/*.test.ts'],
    globalSetup: [fileURLToPath(new URL('./global-setup.ts', import.meta.url))],
    // Tests that talk to real servers need more than the 5 s default, but never hang a run.
    testTimeout: 20_000,
    hookTimeout: 60_000,
    pool: 'forks',
    isolate: true,
    // The shared packages are loaded by Node itself (it strips their types), like the libraries in
    // node_modules, instead of through vitest's transform: no spec swaps them, and each spec run's fork
    // then pays native, cached loading for them, and the check's main process serves one module graph
    // less per run. Measured on two cores, a whole cache-off `./lab test` fell from 544-561 s of CPU and
    // 296-306 s to 457 s and 260 s; rate-limiter's check from 19.8 s of CPU to 17.2 s.
    server: { deps: { external: [SHARED_SOURCES] } },
  } satisfies ViteUserConfig['test'];
  if (runs)
    return defineConfig({
      ...extra,
      test: {
        ...test,
        ...extra.test,
        projects: runs.map((run) => ({
          extends: true,
          resolve: { alias: exerciseAliases(labDir, run.target, run.wrongFix ?? '') },
          test: {
            name: run.name,
            env: { LAB_TARGET: run.target, ...(run.wrongFix ? { LAB_WRONG_FIX: run.wrongFix } : {}) },
          },
        })),
      },
    });
  return defineConfig({
    ...extra,
    resolve: { alias: exerciseAliases(labDir, target) },
    test: { ...test, env: { LAB_TARGET: target }, ...extra.test },
  });
}
