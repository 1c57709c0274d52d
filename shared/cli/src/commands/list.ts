/** `lab list`: every lab in curriculum order with the learner's status, topic, difficulty and services. */
import Table from 'cli-table3';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { readProgress, statusOf, type LabStatus } from '../progress.ts';
import { c, colour as coloured, LAB, say } from '../ui.ts';

const colour: Record<LabStatus, (s: string) => string> = {
  solved: c.green,
  'in progress': c.yellow,
  'not started': c.dim,
};

export function list(root: string, labs: LabPackage[], problems: string[] = []): number {
  const progress = readProgress(root);
  say(c.bold('Backend Labs') + c.dim(`  ${labs.length} lab${labs.length === 1 ? '' : 's'}, in curriculum order`));
  if (labs.length > 0) {
    const table = new Table({
      head: ['#', 'lab', 'status', 'topic', 'difficulty', 'services'],
      style: { head: coloured ? ['bold'] : [], border: [], compact: true },
      chars: {
        top: '',
        'top-mid': '',
        'top-left': '',
        'top-right': '',
        bottom: '',
        'bottom-mid': '',
        'bottom-left': '',
        'bottom-right': '',
        left: '',
        'left-mid': '',
        mid: '',
        'mid-mid': '',
        right: '',
        'right-mid': '',
        middle: '  ',
      },
      wordWrap: true,
      colWidths: [null, null, null, Math.max(30, Math.min(60, (process.stdout.columns ?? 120) - 70)), null, null],
    });
    for (const [i, lab] of labs.entries()) {
      const status = statusOf(progress, lab.slug);
      table.push([
        String(i + 1),
        c.bold(lab.slug),
        colour[status](status),
        lab.lab.topic,
        lab.lab.difficulty,
        c.cyan(lab.lab.services.join(', ') || '-'),
      ]);
    }
    say(table.toString());
  }
  for (const p of problems) say(c.yellow(`! skipped ${p}`));
  say('');
  const next =
    labs.find((l) => statusOf(progress, l.slug) === 'in progress') ??
    labs.find((l) => statusOf(progress, l.slug) !== 'solved');
  if (next)
    say(
      `Run one with ${c.cyan(`${LAB} <lab>`)}; next up: ${c.cyan(`${LAB} ${next.slug}`)}. All commands: ${c.cyan(`${LAB} help`)}`,
    );
  else if (labs.length > 0)
    say(`${c.green('Every lab is solved. ')}The catalog has more questions: ${c.cyan(`${LAB} questions`)}`);
  return 0;
}
