/**
 * `pnpm lab`: the one command surface of Backend Labs (see LABS.md). Every lab is found from its own
 * package.json, so adding a lab adds no code here.
 */
import { parseArgs } from 'node:util';
import { didYouMean, findLab, loadLabs, repoRoot } from './labs.ts';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { c, LAB, say, UserError, warn } from './ui.ts';

/**
 * A command's module, loaded when the command runs: each pulls in what it needs (the service clients,
 * vitest's runner, the bench kit), and a command that does not need them (list, hint) does not wait for
 * them. Every `./lab` call and every task turbo starts pays this start-up.
 */
function later<A extends unknown[], R>(load: () => Promise<(...args: A) => R>) {
  return async (...args: A): Promise<Awaited<R>> => await (await load())(...args);
}
const check = later(async () => (await import('./commands/check.ts')).check);
const diff = later(async () => (await import('./commands/diff.ts')).diff);
const docs = later(async () => (await import('./commands/docs.ts')).docs);
const doctor = later(async () => (await import('./commands/doctor.ts')).doctor);
const newLab = later(async () => (await import('./commands/new.ts')).newLab);
const hint = later(async () => (await import('./commands/hint.ts')).hint);
const list = later(async () => (await import('./commands/list.ts')).list);
const menu = later(async () => (await import('./commands/menu.ts')).menu);
const mutate = later(async () => (await import('./commands/mutate.ts')).mutate);
const questions = later(async () => (await import('./commands/questions.ts')).questions);
const reset = later(async () => (await import('./commands/reset.ts')).reset);
const setup = later(async () => (await import('./commands/setup.ts')).setup);
const runLab = later(async () => (await import('./commands/run.ts')).runLab);
const test = later(async () => (await import('./commands/test.ts')).test);
const watchLab = later(async () => (await import('./commands/watch.ts')).watchLab);
const serveCommand = () => import('./commands/serve.ts');
const runInSlot = later(async () => (await import('./slots.ts')).runInSlot);
const starterChanged = later(async () => (await import('./contract.ts')).starterChanged);

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

type OptionName = Exclude<keyof typeof OPTIONS, 'help'>;
type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

/** What a command gets: its arguments after its name, the options, and the repository's labs. */
interface Invocation {
  args: string[];
  values: Values;
  root: string;
  labs: LabPackage[];
  problems: string[];
}

/**
 * One command of the command line: its name, the help rows that describe it (what follows the command
 * line's own name, and what it does), the options it takes, how many arguments, and what it runs. Help,
 * option checking, "did you mean" and dispatch all read this one list.
 */
interface Command {
  name: string;
  help: [string, string][];
  options: OptionName[];
  /** How many arguments may follow the name. */
  args: number;
  /** True for the commands turbo and CI run in a lab folder: they read the labs themselves. */
  ownLabs?: boolean;
  run(call: Invocation): Promise<number> | number;
}

function portOption(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new UserError(`--port must be a whole number from 0 to 65535, got "${raw}".`);
  return String(port);
}

/** `lab <lab> [--solution] [--watch]`: the command a learner types most, named by the lab itself. */
const RUN: Command = {
  name: '<lab>',
  help: [
    ['<lab>', 'run the spec against your code, with a report'],
    ['<lab> --solution', 'the same against the reference solution'],
    ['<lab> --watch', 'run again on every save (Ctrl-C to stop)'],
  ],
  options: ['solution', 'watch'],
  args: 0,
  run: ({ values, root, labs, args }) => {
    const lab = labs.find((l) => l.slug === args[0])!;
    const target = values.solution ? 'solution' : 'starter';
    return values.watch ? watchLab(root, labs, lab, target) : runLab(root, labs, lab, target);
  },
};

const COMMAND_LIST: Command[] = [
  {
    name: 'list',
    help: [['list', 'every lab with your progress']],
    options: [],
    args: 0,
    run: ({ root, labs, problems }) => list(root, labs, problems),
  },
  RUN,
  {
    name: 'hint',
    help: [['hint <lab>', 'the next hint (one level at a time)']],
    options: [],
    args: 1,
    run: ({ root, labs, args }) => hint(root, findLab(labs, args[0], 'hint')),
  },
  {
    name: 'serve',
    help: [
      ['serve <lab> [--solution] [--port N]', "start the lab's API for curl or a browser"],
      ['serve <lab> --latency postgres=1ms,redis=0.5ms', 'the same with its services that far away (each way)'],
    ],
    options: ['solution', 'port', 'latency'],
    args: 1,
    run: async ({ labs, args, values }) => {
      const lab = findLab(labs, args[0], 'serve');
      const port = portOption(values.port);
      const { latencyOption, runLabScript, SERVE_ENTRY } = await serveCommand();
      return runLabScript(lab, SERVE_ENTRY, {
        args: [lab.dir],
        solution: !!values.solution,
        env: port ? { PORT: port } : {},
        interruptedCode: 0,
        latency: latencyOption(values.latency, lab),
      });
    },
  },
  {
    name: 'bench',
    help: [
      ['bench <lab>', 'the load script: starter vs solution, side by side'],
      ['bench <lab> --check', 'the same, exiting non-zero when a target is missed'],
      ['bench <lab> --open', 'the same, then open its HTML report (else print its path)'],
    ],
    options: ['check', 'open'],
    args: 1,
    run: async ({ labs, args, values }) => {
      const lab = findLab(labs, args[0], 'bench');
      const startedAt = Date.now();
      // The learner's edited src/ is not the starter: every lab's bench measures it as "your code", with the
      // committed starter beside it (the bench kit's starterVersions); LAB_STARTER_LABEL renames the rows of
      // a bench that does not, so none shows the learner's code as the starter's.
      const edited = await starterChanged(lab);
      const { openReport, runLabScript } = await serveCommand();
      if (edited)
        say(
          c.yellow(
            `Your ${lab.lab.exercise.join(', ')} differs from the committed starter: the bench measures it as "your code", with the committed starter beside it.`,
          ),
        );
      // BENCH_CHECK: the bench kit's report makes the script exit non-zero when a target misses.
      const code = await runLabScript(lab, 'load/bench.ts', {
        env: { ...(values.check ? { BENCH_CHECK: '1' } : {}), ...(edited ? { LAB_STARTER_LABEL: 'your code' } : {}) },
      });
      if (values.open) openReport(lab, startedAt);
      return code;
    },
  },
  {
    name: 'mutate',
    help: [
      ['mutate <lab>', "Stryker on the solution: the spec's mutation score and each surviving mutant"],
      ['mutate <lab> --check', 'the same, exiting non-zero below 85% (for lab authors)'],
    ],
    options: ['check'],
    args: 1,
    run: ({ labs, args, values }) => mutate(findLab(labs, args[0], 'mutate'), { check: !!values.check }),
  },
  {
    name: 'diff',
    help: [['diff <lab> [--force]', 'your code next to the reference solution (once solved)']],
    options: ['force'],
    args: 1,
    run: ({ root, labs, args, values }) => diff(root, findLab(labs, args[0], 'diff'), { force: !!values.force }),
  },
  {
    name: 'reset',
    help: [['reset <lab> [--yes]', 'put the starter back (asks first)']],
    options: ['yes'],
    args: 1,
    run: ({ root, labs, args, values }) => reset(root, findLab(labs, args[0], 'reset'), { yes: !!values.yes }),
  },
  {
    name: 'doctor',
    help: [['doctor [lab]', 'Node, pnpm, Docker and where each service is found (for one lab: what it needs)']],
    options: [],
    args: 1,
    run: ({ labs, args }) => doctor(labs, args[0] === undefined ? undefined : findLab(labs, args[0], 'doctor')),
  },
  {
    name: 'setup',
    help: [['setup kafka', 'assemble Kafka from Maven Central now (else the first Kafka lab does it)']],
    options: [],
    args: 1,
    run: ({ args }) => setup(args[0]),
  },
  {
    name: 'new',
    help: [['new <slug>', 'scaffold a lab that already runs (for lab authors)']],
    options: [],
    args: 1,
    run: ({ root, labs, args }) => newLab(root, labs, args[0], COMMANDS),
  },
  {
    name: 'docs',
    help: [['docs [--check]', "write the READMEs' lab table and hints from the manifests; check the outline"]],
    options: ['check'],
    args: 0,
    run: ({ root, labs, values }) => docs(root, labs, { check: !!values.check }),
  },
  {
    name: 'questions',
    help: [
      ['questions [words]', 'search the interview question catalog'],
      ['questions --coverage', 'how many questions a lab answers'],
      ['questions --markdown', 'the catalog as QUESTIONS.md'],
    ],
    options: ['coverage', 'markdown', 'json'],
    args: Number.POSITIVE_INFINITY,
    run: ({ root, labs, args, values }) =>
      questions(root, labs, args.join(' '), {
        coverage: !!values.coverage,
        markdown: !!values.markdown,
        json: !!values.json,
      }),
  },
  {
    name: 'test',
    help: [['test [lab…]', 'verify every lab (or those named) both ways: what CI runs']],
    options: [],
    args: Number.POSITIVE_INFINITY,
    ownLabs: true,
    run: ({ args }) => test(args),
  },
  {
    name: 'check',
    help: [],
    options: [],
    args: 1,
    ownLabs: true,
    // What turbo runs in each lab folder (`lab check`), or a lab authored by name.
    run: ({ args }) =>
      check(args[0] === undefined ? process.cwd() : findLab(loadLabs(repoRoot()).labs, args[0], 'check').dir),
  },
  {
    name: 'slot',
    help: [],
    options: [],
    args: Number.POSITIVE_INFINITY,
    ownLabs: true,
    // A shared package's tests, in a slot of `./lab test` (slots.ts).
    run: ({ args }) => runInSlot(args),
  },
];

/** Every command name: a lab may not take one, and a typo is matched against them. */
export const COMMANDS = [...COMMAND_LIST.filter((cmd) => cmd !== RUN).map((cmd) => cmd.name), 'help'];

/** The help text, with the commands written the way this learner runs them (LAB). */
function helpText(): string {
  const width = 36;
  const rows = [
    ['', 'pick a lab and an action (in a terminal), else the list'],
    ...COMMAND_LIST.flatMap((cmd) => cmd.help),
  ].map(([args, what]) => {
    const command = `${LAB} ${args}`.trimEnd();
    // A command too long for its column gets its description on the next line.
    return command.length < width - 1
      ? `  ${command.padEnd(width)}${what}`
      : `  ${command}\n  ${' '.repeat(width)}${what}`;
  });
  return `${c.bold(LAB)} — run, break, fix and measure backend labs\n\n${rows.join('\n')}\n\nYour progress stays on this machine, in .lab/progress.json.`;
}

/** Rejects options given to a command that does not take them, and stray extra arguments. */
function expect(command: Command, values: Values, args: string[]) {
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || name === 'help') continue;
    if (!command.options.includes(name as OptionName)) {
      const where = COMMAND_LIST.filter((cmd) => cmd.options.includes(name as OptionName)).map(
        (cmd) => `${LAB} ${cmd.name}`,
      );
      throw new UserError(
        `--${name} does not apply here${where.length > 0 ? `; it goes with ${where.join(', ')}` : ''}.`,
      );
    }
  }
  if (args.length > command.args)
    throw new UserError(`Unexpected argument "${args[command.args]}". See ${c.cyan(`${LAB} help`)}.`);
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
  const values: Values = parsed.values;
  const [first, ...rest] = parsed.positionals;
  if (values.help || first === 'help') {
    say(helpText());
    return 0;
  }
  const named = COMMAND_LIST.find((cmd) => cmd !== RUN && cmd.name === first);
  // What turbo and CI run: unaffected by the learner's labs and commands below.
  if (named?.ownLabs) {
    expect(named, values, rest);
    return named.run({ args: rest, values, root: '', labs: [], problems: [] });
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
    const listCommand = COMMAND_LIST[0]!;
    expect(listCommand, values, []);
    return listCommand.run({ args: [], values, root, labs, problems });
  }
  if (named) {
    expect(named, values, rest);
    return named.run({ args: rest, values, root, labs, problems });
  }
  const lab = labs.find((l) => l.slug === first);
  // Options typed as commands (`./lab watch rate-limiter`): say how they are written.
  if (!lab && (first === 'watch' || first === 'solution' || first === 'run')) {
    const slug = labs.find((l) => l.slug === rest[0])?.slug ?? '<lab>';
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
  expect(RUN, values, rest);
  return RUN.run({ args: [first], values, root, labs, problems });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UserError) {
      warn(error.message);
      process.exitCode = error.exitCode;
    } else if (error instanceof Error && error.name === 'ServiceUnavailableError') {
      // A service no provider could supply (@labs/services): its message says what was tried.
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
