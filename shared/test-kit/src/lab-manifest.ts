/**
 * A lab's own metadata lives in the `lab` field of its package.json, so adding a lab adds no code
 * anywhere else. This module reads it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isServiceKind, type ServiceKind } from '@labs/services';

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
}

/** The parsed package.json of a lab, with its manifest checked. */
export interface LabPackage {
  name: string;
  dir: string;
  slug: string;
  lab: LabManifest;
  imports?: Record<string, string | Record<string, string>>;
  scripts?: Record<string, string>;
}

/** Reads and checks the manifest of the lab in `dir`; throws a readable error if it is malformed. */
export function readLabPackage(dir: string): LabPackage {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Omit<LabPackage, 'dir' | 'slug'>;
  const slug = pkg.name.replace(/^@labs\//, '');
  const lab = pkg.lab;
  if (!lab) throw new Error(`${pkg.name}: package.json has no "lab" field`);
  for (const s of lab.services ?? []) if (!isServiceKind(s)) throw new Error(`${pkg.name}: unknown service "${s}"`);
  if (!Array.isArray(lab.exercise) || lab.exercise.length === 0)
    throw new Error(`${pkg.name}: "lab.exercise" lists no files`);
  return { ...pkg, dir, slug, lab: { ...lab, services: lab.services ?? [], hints: lab.hints ?? [] } };
}
