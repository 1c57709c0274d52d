/**
 * The parts of the READMEs that the lab manifests already say: the root README's lab table and each
 * lab's hints. They are written between markers by `lab docs`, and a test fails when a README drifts
 * from its manifest, so a hint is edited in one place (package.json) and never copied by hand.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { SERVICES } from '@labs/services';

/** One generated block: the file, the marker name, and the text that belongs between the markers. */
interface Block {
  file: string;
  name: string;
  text: string;
}

const start = (name: string) =>
  `<!-- ${name}: generated from the lab manifests by \`lab docs\`; edit package.json, not this -->`;
const end = (name: string) => `<!-- /${name} -->`;

/** Every hint hidden the same way, mildest first, so a reader opens only the next one. */
export function renderHints(lab: LabPackage): string {
  return lab.lab.hints
    .map((hint, i) => `<details><summary>Hint ${i + 1} of ${lab.lab.hints.length}</summary>\n\n${hint}\n\n</details>`)
    .join('\n\n');
}

/** The root README's table: every lab in curriculum order with its services and topic. */
export function renderLabTable(labs: LabPackage[]): string {
  const rows = labs.map((lab, i) => {
    const services = lab.lab.services.map((s) => SERVICES[s].title).join(', ') || 'none';
    return `| ${i + 1} | [${lab.slug}](labs/${lab.slug}/README.md) | ${services} | ${lab.lab.difficulty} | ${lab.lab.topic} |`;
  });
  return ['| # | lab | services | difficulty | topic |', '| - | --- | -------- | ---------- | ----- |', ...rows].join(
    '\n',
  );
}

function blocks(root: string, labs: LabPackage[], rootReadme: boolean): Block[] {
  return [
    ...(rootReadme ? [{ file: join(root, 'README.md'), name: 'labs', text: renderLabTable(labs) }] : []),
    ...labs.map((lab) => ({ file: join(lab.dir, 'README.md'), name: 'hints', text: renderHints(lab) })),
  ];
}

/** The file's text with the block replaced, or undefined when the file lacks its markers. */
function replaceBlock(content: string, block: Block): string | undefined {
  const from = content.indexOf(`<!-- ${block.name}:`);
  const to = content.indexOf(end(block.name));
  if (from === -1 || to === -1 || to < from) return undefined;
  return `${content.slice(0, from)}${start(block.name)}\n${block.text}\n${content.slice(to)}`;
}

/** What `lab docs` found: per README, whether it matched, was rewritten, or lacks its markers. */
export interface DocsResult {
  file: string;
  state: 'current' | 'written' | 'drifted' | 'no markers';
}

/**
 * Compares each README's generated blocks with the manifests; with `write`, rewrites the ones that
 * drifted. Returns one result per README; `rootReadme: false` leaves the root README's table alone.
 */
export function syncDocs(root: string, labs: LabPackage[], write: boolean, rootReadme = true): DocsResult[] {
  return blocks(root, labs, rootReadme).map((block) => {
    const file = relative(root, block.file);
    const content = readFileSync(block.file, 'utf8');
    const next = replaceBlock(content, block);
    if (next === undefined) return { file, state: 'no markers' };
    if (next === content) return { file, state: 'current' };
    if (!write) return { file, state: 'drifted' };
    writeFileSync(block.file, next);
    return { file, state: 'written' };
  });
}

/**
 * Every lab README's top-level headings, in this order (CONTRIBUTING.md, "The README"): siblings read
 * alike in a workshop, and the exercise comes before anything that gives it away (wrong fixes,
 * decisions and the debrief follow Measuring).
 */
export const README_OUTLINE = [
  'Questions this lab answers',
  'The idea',
  'Steps',
  'Hints',
  'Under faults',
  'Measuring it',
  'Wrong fixes the spec catches',
  'Decisions this lab made',
  'Debrief: answering it in an interview',
  'Further reading',
  'Sources',
] as const;

/** How a README's `## ` headings differ from {@link README_OUTLINE}: one line, or undefined when they match. */
export function outlineProblem(readme: string): string | undefined {
  const headings = [...readme.replace(/```[\s\S]*?```/g, '').matchAll(/^## (.+?)\s*$/gm)].map((m) => m[1]!);
  const missing = README_OUTLINE.filter((h) => !headings.includes(h));
  const extra = headings.filter((h) => !(README_OUTLINE as readonly string[]).includes(h));
  if (missing.length > 0) return `lacks the heading(s) ${missing.map((h) => `"## ${h}"`).join(', ')}`;
  if (extra.length > 0) return `has heading(s) outside the outline: ${extra.map((h) => `"## ${h}"`).join(', ')}`;
  if (headings.join('\n') !== README_OUTLINE.join('\n')) return `has the outline's headings out of order`;
  return undefined;
}
