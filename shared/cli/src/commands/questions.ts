/**
 * `lab questions [words] [--coverage] [--markdown]`: search the question catalog, see which lab answers
 * each question, how much of the catalog runs today, or print QUESTIONS.md.
 */
import type { LabPackage } from '@labs/lab-kit/manifest';
import { catalogMarkdown, coverage, percent, readCatalog, searchCatalog, type Question } from '../catalog.ts';
import { c, LAB, say, UserError } from '../ui.ts';

export interface QuestionsOptions {
  coverage: boolean;
  markdown: boolean;
  json: boolean;
}

export function questions(root: string, labs: LabPackage[], query: string, options: QuestionsOptions): number {
  let catalog: ReturnType<typeof readCatalog>;
  try {
    catalog = readCatalog(root);
  } catch (error) {
    throw new UserError((error as Error).message, 1);
  }
  const slugs = labs.map((l) => l.slug);
  if (options.markdown) {
    process.stdout.write(catalogMarkdown(catalog, slugs));
    return 0;
  }
  if (options.coverage) {
    const cov = coverage(catalog, slugs);
    if (options.json) {
      say(JSON.stringify(cov, null, 2));
      return 0;
    }
    say(
      `${c.bold(`${cov.runnable} of ${cov.total} questions have a runnable lab (${percent(cov.runnable, cov.total)})`)}`,
    );
    for (const [slug, n] of Object.entries(cov.byLab))
      say(`  ${c.green('✓')} ${slug.padEnd(28)} ${n} question${n === 1 ? '' : 's'}`);
    for (const [slug, n] of Object.entries(cov.comingLabs))
      say(
        `  ${c.yellow('…')} ${slug.padEnd(28)} ${n} question${n === 1 ? '' : 's'} ${c.dim('(lab not in labs/ yet)')}`,
      );
    say(
      c.dim(
        `  ${cov.planned} wait for a planned lab; ${cov.answered} are answered in a few sentences (no lab can run them).`,
      ),
    );
    return 0;
  }
  const found = searchCatalog(catalog, query);
  if (options.json) {
    say(JSON.stringify(found, null, 2));
    return 0;
  }
  if (found.length === 0) {
    say(`No question matches "${query}". Try one word, e.g. ${c.cyan(`${LAB} questions cache`)}.`);
    return 1;
  }
  let topic = '';
  for (const q of found) {
    if (q.topic !== topic) {
      topic = q.topic;
      say('');
      say(c.bold(catalog.topics[topic] ?? topic));
    }
    say(`  ${c.dim(q.id.padEnd(9))} ${q.question} ${c.dim(`(${q.difficulty})`)}`);
    say(`  ${' '.repeat(9)} ${answeredBy(q, slugs)}`);
  }
  say('');
  say(c.dim(`${found.length} of ${catalog.questions.length} questions${query ? ` match "${query}"` : ''}.`));
  return 0;
}

function answeredBy(q: Question, slugs: string[]): string {
  if (q.lab)
    return slugs.includes(q.lab)
      ? `→ ${c.green(`${LAB} ${q.lab}`)}`
      : `→ lab ${c.yellow(q.lab)} ${c.dim('(being built)')}`;
  if (q.plannedLab) return `→ ${c.dim(`planned lab: ${q.plannedLab}`)}`;
  return c.dim(`→ ${q.answer}`);
}
