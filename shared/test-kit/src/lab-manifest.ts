/**
 * A lab's own metadata lives in the `lab` field of its package.json, so adding a lab adds no code
 * anywhere else. This module reads it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeIssues, z } from '@labs/lab-kit';
import { isServiceKind, SERVICE_KINDS, type ServiceKind } from '@labs/services';

/** The `lab` field of a lab's package.json. */
export interface LabManifest {
  /** Position in the curriculum (lower comes first). */
  order: number;
  title: string;
  topic: string;
  difficulty: 'easy' | 'medium' | 'hard';
  services: ServiceKind[];
  /** The files the learner edits, relative to the lab folder; each has a twin under solution/. */
  exercise: string[];
  /** Progressive hints, mildest first. */
  hints: string[];
  /** What the kit's invariants allow this lab (invariants.ts); both empty unless the manifest says more. */
  invariants: InvariantPolicy;
}

/**
 * A lab's exceptions to the kit's invariants, each with its reason: a pattern (relative to the key
 * prefix, `*` for any run of characters) of Redis keys that may live for ever, and an invariant the lab
 * does not run at all.
 */
export interface InvariantPolicy {
  permanentKeys: Record<string, string>;
  optOut: Partial<Record<'nothing-lives-for-ever' | 'no-credential-at-rest', string>>;
}

/** A reason is a sentence someone can check, not a placeholder. */
const REASON = z.string().min(20, 'needs a reason (a sentence of at least 20 characters)');

/** The parsed package.json of a lab, with its manifest checked. */
export interface LabPackage {
  name: string;
  dir: string;
  slug: string;
  lab: LabManifest;
  imports?: Record<string, string | Record<string, string>>;
  scripts?: Record<string, string>;
}

/** The manifest's rules: a typo (an `order` that is not a number, an unknown service) is an error that names it. */
const MANIFEST = z.object({
  order: z.number().int().min(0),
  title: z.string().min(1),
  topic: z.string().min(1),
  difficulty: z.enum(['easy', 'medium', 'hard']),
  services: z
    .array(z.string().refine(isServiceKind, { message: `must be one of ${SERVICE_KINDS.join(', ')}` }))
    .default([]),
  exercise: z.array(z.string().regex(/^src\//, 'must be a path under src/')).min(1, 'lists no files'),
  hints: z.array(z.string().min(1)).default([]),
  invariants: z
    .object({
      permanentKeys: z.record(z.string().min(1), REASON).default({}),
      optOut: z.partialRecord(z.enum(['nothing-lives-for-ever', 'no-credential-at-rest']), REASON).default({}),
    })
    .strict()
    .default({ permanentKeys: {}, optOut: {} }),
});

/** Reads and checks the manifest of the lab in `dir`; throws a readable error if it is malformed. */
export function readLabPackage(dir: string): LabPackage {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Omit<
    LabPackage,
    'dir' | 'slug' | 'lab'
  > & {
    lab?: unknown;
  };
  const slug = pkg.name.replace(/^@labs\//, '');
  if (pkg.lab === undefined) throw new Error(`${pkg.name}: package.json has no "lab" field`);
  const parsed = MANIFEST.safeParse(pkg.lab);
  if (!parsed.success) throw new Error(`${pkg.name}: package.json "lab": ${describeIssues(parsed.error).join('; ')}`);
  return { ...pkg, dir, slug, lab: parsed.data as LabManifest };
}
