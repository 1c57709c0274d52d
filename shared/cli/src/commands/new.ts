/**
 * `lab new <slug>`: scaffolds a lab that already runs and already holds its contract (a starter, a
 * solution, a spec with one baseline and one challenge, a load script, a README skeleton), from the
 * templates in shared/cli/templates/lab. Nothing outside the new folder changes: the repository root
 * depends on the shared packages, so the new lab resolves them before anyone runs `pnpm install`.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { syncDocs } from '../docs.ts';
import { readLabPackage } from '@labs/lab-kit/manifest';
import { c, LAB, say, UserError } from '../ui.ts';

const TEMPLATES = fileURLToPath(new URL('../../templates/lab/', import.meta.url));
const SLUG = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** Every template file, relative to the templates folder. */
const templateFiles = () =>
  readdirSync(TEMPLATES, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.tmpl'));

export function newLab(
  root: string,
  labs: LabPackage[],
  slug: string | undefined,
  /** The command line's command names: a lab may not take one. */
  commands: readonly string[],
): number {
  if (!slug) throw new UserError(`Which slug? Usage: ${LAB} new <slug>, e.g. ${LAB} new idempotency-keys`);
  if (!SLUG.test(slug))
    throw new UserError(`"${slug}" is not a lab slug: lower-case words joined by hyphens, e.g. idempotency-keys.`);
  if (commands.includes(slug)) throw new UserError(`"${slug}" is a command name; choose another slug.`);
  const dir = join(root, 'labs', slug);
  if (existsSync(dir)) throw new UserError(`labs/${slug} already exists.`);
  const title = slug.replace(/-/g, ' ').replace(/^./, (ch) => ch.toUpperCase());
  const order = Math.max(0, ...labs.map((l) => l.lab.order)) + 10;
  const fill = (text: string) =>
    text.replaceAll('__SLUG__', slug).replaceAll('__TITLE__', title).replaceAll('__ORDER__', String(order));
  for (const file of templateFiles()) {
    const target = join(dir, file.replace(/\.tmpl$/, ''));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, fill(readFileSync(join(TEMPLATES, file), 'utf8')));
  }
  syncDocs(root, [readLabPackage(dir)], true, false); // its hints; the root table follows with `lab docs`
  say(`${c.green('✓')} Scaffolded ${relative(root, dir)}: a starter, a solution, a spec, a load script and a README.`);
  say('');
  say(`  ${c.cyan(`${LAB} check ${slug}`)}      the contract holds from the first minute`);
  say(`  ${c.cyan(`${LAB} ${slug}`)}            the learner's view: the challenge fails on the starter`);
  say(`  ${c.cyan('pnpm install')}              once you add dependencies to its package.json`);
  say('');
  say(`Then replace the example with the lab (CONTRIBUTING.md), and run ${LAB} docs to list it in README.md.`);
  say(`To remove it again: git clean -fdx labs/${slug}`);
  return 0;
}
