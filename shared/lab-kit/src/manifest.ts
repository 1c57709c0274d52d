/**
 * A lab's own metadata lives in the `lab` field of its package.json, so adding a lab adds no code
 * anywhere else. This module is its one definition: the rules (a zod schema), the type read from those
 * rules, and the reader. It lives in the lab kit, the floor both the command line and the test kit stand
 * on, and it loads only zod and the list of service kinds: the command line reads manifests on every
 * start, so it must not pay for Express, the clients or the fixtures to do so.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isServiceKind, SERVICE_KINDS, type ServiceKind } from '@labs/services/kinds';
import { z } from 'zod';
import { describeIssues } from './input.ts';

/** A reason is a sentence someone can check, not a placeholder. */
const REASON = z.string().min(20, 'needs a reason (a sentence of at least 20 characters)');

/**
 * The kit's invariants by name, as `lab.invariants.optOut` spells them: the one list, which the test kit
 * (invariants.ts) runs and the schema below accepts.
 */
export const INVARIANT_NAMES = [
  'nothing-lives-for-ever',
  'no-credential-at-rest',
  'no-process-dies',
  'malformed-message-sent',
] as const;

/**
 * A lab's exceptions to the kit's invariants, each with its reason: a pattern (relative to the key
 * prefix, `*` for any run of characters) of Redis keys that may live for ever, and an invariant the lab
 * does not run at all. Both are empty unless the manifest says more.
 */
const INVARIANT_POLICY = z
  .object({
    permanentKeys: z.record(z.string().min(1), REASON).default({}),
    optOut: z.partialRecord(z.enum(INVARIANT_NAMES), REASON).default({}),
  })
  .strict()
  .default({ permanentKeys: {}, optOut: {} });

/** The manifest's rules: a typo (an `order` that is not a number, an unknown service) is an error that names it. */
export const LAB_MANIFEST = z.object({
  /** Position in the curriculum (lower comes first). */
  order: z.number().int().min(0),
  title: z.string().min(1),
  topic: z.string().min(1),
  difficulty: z.enum(['easy', 'medium', 'hard']),
  services: z
    .array(z.string().refine(isServiceKind, { message: `must be one of ${SERVICE_KINDS.join(', ')}` }))
    .default([])
    // refine() checks but does not narrow: the type says what the check let through.
    .transform((kinds) => kinds as ServiceKind[]),
  /** The files the learner edits, relative to the lab folder; each has a twin under solution/. */
  exercise: z.array(z.string().regex(/^src\//, 'must be a path under src/')).min(1, 'lists no files'),
  /** Progressive hints, mildest first. */
  hints: z.array(z.string().min(1)).default([]),
  /** What the kit's invariants allow this lab. */
  invariants: INVARIANT_POLICY,
});

/** The `lab` field of a lab's package.json, as read (defaults filled in). */
export type LabManifest = z.infer<typeof LAB_MANIFEST>;
/** A lab's exceptions to the kit's invariants. */
export type InvariantPolicy = LabManifest['invariants'];
/** One of the kit's invariants, by its name in the manifest. */
export type InvariantName = (typeof INVARIANT_NAMES)[number];

/** The parsed package.json of a lab, with its manifest checked. */
export interface LabPackage {
  name: string;
  /** The lab's folder. */
  dir: string;
  /** The folder's name and the package's name without `@labs/`: said once, in package.json's name. */
  slug: string;
  lab: LabManifest;
  imports?: Record<string, string | Record<string, string>>;
  scripts?: Record<string, string>;
}

/** The slug a package name stands for: `@labs/rate-limiter` is `rate-limiter`. */
export const slugOf = (packageName: string) => packageName.replace(/^@labs\//, '');

/** Reads and checks the manifest of the lab in `dir`; throws a readable error if it is malformed. */
export function readLabPackage(dir: string): LabPackage {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Omit<
    LabPackage,
    'dir' | 'slug' | 'lab'
  > & {
    lab?: unknown;
  };
  if (pkg.lab === undefined) throw new Error(`${pkg.name}: package.json has no "lab" field`);
  const parsed = LAB_MANIFEST.safeParse(pkg.lab);
  if (!parsed.success) throw new Error(`${pkg.name}: package.json "lab": ${describeIssues(parsed.error).join('; ')}`);
  return { ...pkg, dir, slug: slugOf(pkg.name), lab: parsed.data };
}

/**
 * The lab folder that holds `file` (a module of the lab, say its server/lab.ts): the nearest folder
 * above it whose package.json has a `lab` field. Undefined when there is none.
 */
export function labDirOf(file: string): string | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { lab?: unknown };
      if (pkg.lab !== undefined) return dir;
    } catch {
      // no package.json here (or not JSON): look one floor up
    }
    if (dirname(dir) === dir) return undefined;
  }
}
