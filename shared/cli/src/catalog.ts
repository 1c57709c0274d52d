/**
 * The question catalog (catalog/questions.yaml at the repository root): every interview question the
 * project knows, in our own words, each answered by a lab, by a planned lab, or by a short answer.
 * Which lab answers a question is the catalog's `lab` field; coverage is computed from labs/ at run time,
 * so it grows as labs land.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export type Difficulty = 'easy' | 'medium' | 'hard';

/** One question. Exactly one of `lab`, `plannedLab` and `answer` is set. */
export interface Question {
  /** Stable id, `<topic prefix>-NN`; never reused. */
  id: string;
  /** Topic id, one of the catalog's `topics`. */
  topic: string;
  difficulty: Difficulty;
  question: string;
  /** Slug of the lab that answers it (it exists in labs/ or is being built). */
  lab?: string;
  /** Slug of a lab we plan to write for it. */
  plannedLab?: string;
  /** A short answer, for questions no lab can run. */
  answer?: string;
}

/** The parsed catalog. */
export interface Catalog {
  /** Topic id -> title, in the order they are shown. */
  topics: Record<string, string>;
  questions: Question[];
}

/** Where the catalog lives in the repository. */
export const catalogPath = (root: string) => join(root, 'catalog', 'questions.yaml');

const DIFFICULTIES: readonly string[] = ['easy', 'medium', 'hard'];
const SLUG = /^[a-z0-9]+(-[a-z0-9]+)*$/;

/** Every way `catalog` breaks the rules above, one readable line each (empty when it is sound). */
export function validateCatalog(catalog: Catalog): string[] {
  const problems: string[] = [];
  const ids = new Set<string>();
  const texts = new Map<string, string>();
  for (const [i, q] of catalog.questions.entries()) {
    const where = q.id ? `question ${q.id}` : `question #${i + 1}`;
    if (!q.id || !/^[a-z]+-\d{2,}$/.test(q.id)) problems.push(`${where}: id must look like "http-01"`);
    if (ids.has(q.id)) problems.push(`${where}: the id is used twice`);
    ids.add(q.id);
    if (!(q.topic in catalog.topics)) problems.push(`${where}: unknown topic "${q.topic}"`);
    if (!DIFFICULTIES.includes(q.difficulty)) problems.push(`${where}: difficulty must be easy, medium or hard`);
    if (typeof q.question !== 'string' || q.question.trim().length < 8)
      problems.push(`${where}: the question is missing`);
    const key = String(q.question)
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, ' ')
      .trim();
    if (texts.has(key)) problems.push(`${where}: same question as ${texts.get(key)}`);
    texts.set(key, q.id);
    const kinds = [q.lab, q.plannedLab, q.answer].filter((x) => x !== undefined);
    if (kinds.length !== 1) problems.push(`${where}: needs exactly one of lab, plannedLab, answer`);
    for (const slug of [q.lab, q.plannedLab])
      if (slug !== undefined && !SLUG.test(slug)) problems.push(`${where}: "${slug}" is not a lab slug`);
    if (q.answer !== undefined && (typeof q.answer !== 'string' || q.answer.trim().length < 20))
      problems.push(`${where}: the answer is too short`);
  }
  return problems;
}

/** Reads the catalog; throws with every problem listed when it is malformed. */
export function readCatalog(root: string): Catalog {
  const raw = parse(readFileSync(catalogPath(root), 'utf8')) as Partial<Catalog> | null;
  const catalog: Catalog = { topics: raw?.topics ?? {}, questions: raw?.questions ?? [] };
  const problems = validateCatalog(catalog);
  if (problems.length > 0) throw new Error(`catalog/questions.yaml is malformed:\n  ${problems.join('\n  ')}`);
  return catalog;
}

const normal = (s: string) => s.toLowerCase().replace(/[-_/]+/g, ' ');

/**
 * Questions matching every word of `query`, case-insensitively, in the id, topic, question or lab slug;
 * when none does, in the short answers too.
 */
export function searchCatalog(catalog: Catalog, query: string): Question[] {
  // A rough stem, so "cache" finds "caching" and "queues" finds "queue".
  const words = normal(query)
    .split(/\s+/)
    .filter(Boolean)
    .map((w) => (w.length > 4 ? w.replace(/(ing|es|s|e)$/, '') : w));
  if (words.length === 0) return catalog.questions;
  const matches = (fields: (string | undefined)[]) => {
    const text = normal(fields.join(' '));
    return words.every((w) => text.includes(w));
  };
  const primary = catalog.questions.filter((q) =>
    matches([q.id, q.topic, catalog.topics[q.topic], q.difficulty, q.question, q.lab, q.plannedLab]),
  );
  if (primary.length > 0) return primary;
  return catalog.questions.filter((q) => matches([q.question, q.answer]));
}

/** How many questions a lab that exists in labs/ answers, out of all. */
export interface Coverage {
  runnable: number;
  total: number;
  /** Slug -> number of questions, for labs that exist. */
  byLab: Record<string, number>;
  /** Labs the catalog names that are not in labs/ yet, with their question counts. */
  comingLabs: Record<string, number>;
  planned: number;
  answered: number;
}

export function coverage(catalog: Catalog, existingLabs: string[]): Coverage {
  const byLab: Record<string, number> = {};
  const comingLabs: Record<string, number> = {};
  let planned = 0;
  let answered = 0;
  for (const q of catalog.questions) {
    if (q.lab && existingLabs.includes(q.lab)) byLab[q.lab] = (byLab[q.lab] ?? 0) + 1;
    else if (q.lab) comingLabs[q.lab] = (comingLabs[q.lab] ?? 0) + 1;
    else if (q.plannedLab) planned++;
    else answered++;
  }
  const runnable = Object.values(byLab).reduce((a, b) => a + b, 0);
  return { runnable, total: catalog.questions.length, byLab, comingLabs, planned, answered };
}

/** "12.3%" */
export const percent = (part: number, whole: number) => `${whole === 0 ? 0 : Math.round((part / whole) * 1000) / 10}%`;

/** The browsable QUESTIONS.md, generated from the catalog (and labs/ for what is runnable today). */
export function catalogMarkdown(catalog: Catalog, existingLabs: string[]): string {
  const cov = coverage(catalog, existingLabs);
  const out: string[] = [
    '# Backend interview questions',
    '',
    '<!-- Generated from catalog/questions.yaml by `pnpm lab questions --markdown > QUESTIONS.md`. Edit the YAML, not this file. -->',
    '',
    `${cov.total} questions, each answered by a lab you can run (\`pnpm lab <lab>\`), by a lab we plan to write, or by a short answer.`,
    `When this file was generated, ${cov.runnable} of them (${percent(cov.runnable, cov.total)}) had a runnable lab; \`pnpm lab questions --coverage\` gives today's figure.`,
    'Search from the terminal with `pnpm lab questions <word>`.',
    '',
  ];
  for (const [topic, title] of Object.entries(catalog.topics)) {
    const questions = catalog.questions.filter((q) => q.topic === topic);
    if (questions.length > 0) out.push(`- [${title}](#${anchor(title)}) (${questions.length})`);
  }
  for (const [topic, title] of Object.entries(catalog.topics)) {
    const questions = catalog.questions.filter((q) => q.topic === topic);
    if (questions.length === 0) continue;
    out.push('', `## ${title}`, '', '| id | level | question | answered by |', '| --- | --- | --- | --- |');
    for (const q of questions) {
      const by = q.lab
        ? existingLabs.includes(q.lab)
          ? `lab [\`${q.lab}\`](labs/${q.lab}/README.md)`
          : `lab \`${q.lab}\` (being built)`
        : q.plannedLab
          ? `planned lab \`${q.plannedLab}\``
          : cell(q.answer ?? '');
      out.push(`| ${q.id} | ${q.difficulty} | ${cell(q.question)} | ${by} |`);
    }
  }
  return `${out.join('\n')}\n`;
}

const cell = (s: string) =>
  s
    .replace(/\|/g, '\\|')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
const anchor = (title: string) =>
  title
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .replace(/ /g, '-');
