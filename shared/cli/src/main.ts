/**
 * `pnpm lab`: the one command surface of Backend Labs (see LABS.md). Every lab is found from its own
 * package.json, so adding a lab adds no code here.
 */
import { parseArgs } from 'node:util';
import { ServiceUnavailableError } from '@labs/services';
import { check } from './commands/check.ts';
import { starterChanged } from './contract.ts';
import { diff } from './commands/diff.ts';
import { docs } from './commands/docs.ts';
import { doctor } from './commands/doctor.ts';
import { newLab } from './commands/new.ts';
import { hint } from './commands/hint.ts';
import { list } from './commands/list.ts';
import { menu } from './commands/menu.ts';
import { questions } from './commands/questions.ts';
import { reset } from './commands/reset.ts';
import { setup } from './commands/setup.ts';
import { runLab } from './commands/run.ts';
import { latencyOption, openReport, runLabScript, SERVE_ENTRY } from './commands/serve.ts';
import { test } from './commands/test.ts';
import { watchLab } from './commands/watch.ts';
import { COMMANDS, didYouMean, findLab, loadLabs, repoRoot } from './labs.ts';
import { c, LAB, say, UserError, warn } from './ui.ts';

/** The commands and what they do; the first column is what follows `pnpm lab` (or `./lab`). */
const HELP_ROWS: [string, string][] = [
  ['', 'pick a lab and an action (in a terminal), else the list'],
  ['list', 'every lab with your progress'],
  ['<lab>', 'run the spec against your code, with a report'],
  ['<lab> --solution', 'the same against the reference solution'],
  ['<lab> --watch', 'run again on every save (Ctrl-C to stop)'],
  ['hint <lab>', 'the next hint (one level at a time)'],
  ['serve <lab> [--solution] [--port N]', "start the lab's API for curl or a browser"],
  ['serve <lab> --latency postgres=1ms,redis=0.5ms', 'the same with its services that far away (each way)'],
  ['bench <lab>', 'the load script: starter vs solution, side by side'],
  ['bench <lab> --check', 'the same, exiting non-zero when a target is missed'],
  ['bench <lab> --open', 'the same, then open its HTML report (else print its path)'],
  ['diff <lab> [--force]', 'your code next to the reference solution (once solved)'],
  ['reset <lab> [--yes]', 'put the starter back (asks first)'],
  ['doctor [lab]', 'Node, pnpm, Docker and where each service is found (for one lab: what it needs)'],
  ['setup kafka', 'assemble Kafka from Maven Central now (else the first Kafka lab does it)'],
  ['new <slug>', 'scaffold a lab that already runs (for lab authors)'],
  ['docs [--check]', "write the READMEs' lab table and hints from the manifests"],
  ['questions [words]', 'search the interview question catalog'],
  ['questions --coverage', 'how many questions a lab answers'],
  ['questions --markdown', 'the catalog as QUESTIONS.md'],
  ['test [lab…]', 'verify every lab (or those named) both ways: what CI runs'],
];

/** The help text, with the commands written the way this learner runs them (LAB). */
function helpText(): string {
  const width = 36;
  const rows = HELP_ROWS.map(([args, what]) => {
    const command = `${LAB} ${args}`.trimEnd();
    // A command too long for its column gets its description on the next line.
    return command.length < width - 1
      ? `  ${command.padEnd(width)}${what}`
      : `  ${command}\n  ${' '.repeat(width)}${what}`;
  });
  return `${c.bold(LAB)} — run, break, fix and measure backend labs\n\n${rows.join('\n')}\n\nYour progress stays on this machine, in .lab/progress.json.`;
}

/** Which options each command accepts; `run` is `pnpm lab <lab>`. */
const ALLOWED: Record<string, string[]> = {
  list: [],
  run: ['solution', 'watch'],
  hint: [],
  serve: ['solution', 'port', 'latency'],
  bench: ['check', 'open'],
  diff: ['force'],
  reset: ['yes'],
  doctor: [],
  setup: [],
  questions: ['coverage', 'markdown', 'json'],
  test: [],
  new: [],
  docs: ['check'],
  check: [],
};

const OPTIONS = {
  solution: { type: 'boolean' },
  watch: { type: 'boolean', short: 'w' },
  port: { type: 'string', short: 'p' },
  yes: { type: 'boolean', short: 'y' },
  force: { type: 'boolean' },
  coverage: { type: 'boolean' },
  markdown: { type: 'boolean' },
  json: { type: 'boolean' },
  check: { type: 'boolean' },
  latency: { type: 'string' },
  open: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function portOption(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new UserError(`--port must be a whole number from 0 to 65535, got "${raw}".`);
  return String(port);
}

/** Rejects options given to a command that does not use them, and stray extra arguments. */
function expect(command: string, values: Record<string, unknown>, positionals: string[], maxPositionals: number) {
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || name === 'help') continue;
    if (!ALLOWED[command]?.includes(name)) {
      const where = Object.entries(ALLOWED)
        .filter(([, opts]) => opts.includes(name))
        .map(([cmd]) => (cmd === 'run' ? `${LAB} <lab>` : `${LAB} ${cmd}`));
      throw new UserError(
        `--${name} does not apply here${where.length > 0 ? `; it goes with ${where.join(', ')}` : ''}.`,
      );
    }
  }
  if (positionals.length > maxPositionals)
    throw new UserError(`Unexpected argument "${positionals[maxPositionals]}". See ${c.cyan(`${LAB} help`)}.`);
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof OPTIONS }>>;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (error) {
    throw new UserError(
      `${(error as Error).message.replace(/\. To specify a positional.*$/s, '.')}\nRun ${c.cyan(`${LAB} help`)} for the commands and their options.`,
    );
  }
  const { values, positionals } = parsed;
  const [first, second] = positionals;
  if (values.help || first === 'help') {
    say(helpText());
    return 0;
  }
  // What turbo and CI run: unchanged, and unaffected by the learner's commands below.
  if (first === 'check') {
    expect('check', values, positionals, 2);
    return check(second === undefined ? process.cwd() : findLab(loadLabs(repoRoot()).labs, second, 'check').dir);
  }
  if (first === 'test') {
    expect('test', values, positionals, Number.POSITIVE_INFINITY);
    return test(positionals.slice(1));
  }

  const root = repoRoot();
  const { labs, problems } = loadLabs(root);
  if (first === undefined) {
    if (
      process.stdin.isTTY &&
      process.stdout.isTTY &&
      labs.length > 0 &&
      Object.values(values).every((v) => v === undefined)
    ) {
      const picked = await menu(root, labs);
      return picked ? main(picked) : 0;
    }
    expect('list', values, positionals, 0);
    return list(root, labs, problems);
  }
  switch (first) {
    case 'list':
      expect('list', values, positionals, 1);
      return list(root, labs, problems);
    case 'doctor':
      expect('doctor', values, positionals, 2);
      return doctor(labs, second === undefined ? undefined : findLab(labs, second, 'doctor'));
    case 'setup':
      expect('setup', values, positionals, 2);
      return setup(second);
    case 'docs':
      expect('docs', values, positionals, 1);
      return docs(root, labs, { check: !!values.check });
    case 'new':
      expect('new', values, positionals, 2);
      return newLab(root, labs, second);
    case 'questions':
      expect('questions', values, [], 0);
      return questions(root, labs, positionals.slice(1).join(' '), {
        coverage: !!values.coverage,
        markdown: !!values.markdown,
        json: !!values.json,
      });
    case 'hint':
      expect('hint', values, positionals, 2);
      return hint(root, findLab(labs, second, 'hint'));
    case 'serve': {
      expect('serve', values, positionals, 2);
      const lab = findLab(labs, second, 'serve');
      const port = portOption(values.port);
      return runLabScript(lab, SERVE_ENTRY, {
        args: [lab.dir],
        solution: !!values.solution,
        env: port ? { PORT: port } : {},
        interruptedCode: 0,
        latency: latencyOption(values.latency, lab),
      });
    }
    case 'bench': {
      expect('bench', values, positionals, 2);
      const lab = findLab(labs, second, 'bench');
      const startedAt = Date.now();
      // The learner's edited src/ is not the starter: its rows say "your code" (the bench kit renames them).
      const edited = starterChanged(lab);
      if (edited)
        say(
          c.yellow(
            `Your ${lab.lab.exercise.join(', ')} differs from the starter: the rows it runs are labelled "your code". The starter's own figures are in the lab's README (or: git stash, bench, git stash pop).`,
          ),
        );
      // BENCH_CHECK: the bench kit's report makes the script exit non-zero when a target misses.
      const code = await runLabScript(lab, 'load/bench.ts', {
        env: { ...(values.check ? { BENCH_CHECK: '1' } : {}), ...(edited ? { LAB_STARTER_LABEL: 'your code' } : {}) },
      });
      if (values.open) openReport(lab, startedAt);
      return code;
    }
    case 'diff':
      expect('diff', values, positionals, 2);
      return diff(root, findLab(labs, second, 'diff'), { force: !!values.force });
    case 'reset':
      expect('reset', values, positionals, 2);
      return reset(root, findLab(labs, second, 'reset'), { yes: !!values.yes });
  }
  const lab = labs.find((l) => l.slug === first);
  // Options typed as commands (`./lab watch rate-limiter`): say how they are written.
  if (!lab && (first === 'watch' || first === 'solution' || first === 'run')) {
    const slug = labs.find((l) => l.slug === second)?.slug ?? '<lab>';
    const option = first === 'run' ? '' : ` --${first}`;
    throw new UserError(`"${first}" is an option of a lab, not a command: ${c.cyan(`${LAB} ${slug}${option}`)}`);
  }
  if (!lab) {
    const guess = didYouMean(first, [...labs.map((l) => l.slug), ...COMMANDS]);
    const skipped = problems.find((p) => p.startsWith(`labs/${first}:`));
    throw new UserError(
      skipped
        ? `labs/${first} cannot be read yet: ${skipped.slice(skipped.indexOf(':') + 2)}`
        : `"${first}" is neither a lab nor a command.${guess ? ` Did you mean ${c.bold(guess)}?` : ''}\nRun ${c.cyan(`${LAB} help`)} for the commands, ${c.cyan(`${LAB} list`)} for the labs.`,
    );
  }
  expect('run', values, positionals, 1);
  const target = values.solution ? 'solution' : 'starter';
  return values.watch ? watchLab(root, labs, lab, target) : runLab(root, labs, lab, target);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UserError) {
      warn(error.message);
      process.exitCode = error.exitCode;
    } else if (error instanceof ServiceUnavailableError) {
      warn(error.message);
      process.exitCode = 1;
    } else {
      warn(c.red(`Unexpected error: ${(error as Error).message ?? error}`));
      warn(c.dim('This is a bug in the lab tooling; LABS_DEBUG=1 shows the stack trace.'));
      if (process.env.LABS_DEBUG) warn(String((error as Error).stack));
      process.exitCode = 1;
    }
  },
);
