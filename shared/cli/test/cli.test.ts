/**
 * The command line as a learner meets it: spawned as a process from the repository root, judged by its
 * output and exit code. Expected figures are computed here from labs/ and the catalog, never hard-coded.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { hasStackTrace, lab, repo } from './helpers.ts';

/** Progress goes to a temporary folder: the tests never touch the learner's .lab/progress.json. */
const state = mkdtempSync(join(tmpdir(), 'lab-cli-state-'));
const env = { LABS_STATE_DIR: state };
afterAll(() => rmSync(state, { recursive: true, force: true }));

/** The labs as the tests see them: every labs/<dir>/package.json with a `lab` field. */
function labsOnDisk(): { slug: string; order: number }[] {
  return readdirSync(join(repo, 'labs'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) => {
      try {
        const pkg = JSON.parse(readFileSync(join(repo, 'labs', d.name, 'package.json'), 'utf8'));
        return pkg.lab ? [{ slug: String(pkg.name).replace(/^@labs\//, ''), order: Number(pkg.lab.order) }] : [];
      } catch {
        return [];
      }
    });
}

interface CatalogEntry {
  id: string;
  question: string;
  lab?: string;
}
const catalog = () =>
  parse(readFileSync(join(repo, 'catalog', 'questions.yaml'), 'utf8')) as { questions: CatalogEntry[] };

describe('pnpm lab list', () => {
  it('prints every lab in labs/, in curriculum order, when there is no terminal', async () => {
    const r = await lab([], { env });
    expect(r.code).toBe(0);
    const labs = labsOnDisk().sort((a, b) => a.order - b.order || a.slug.localeCompare(b.slug));
    expect(labs.length).toBeGreaterThan(0);
    const positions = labs.map((l) => r.stdout.indexOf(` ${l.slug} `));
    for (const [i, p] of positions.entries()) expect(p, `${labs[i]!.slug} is listed`).toBeGreaterThan(-1);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(r.stdout).toContain('not started'); // a fresh state folder: nothing run yet
  });

  it('answers help with the command table', async () => {
    const r = await lab(['help']);
    expect(r.code).toBe(0);
    for (const command of ['hint', 'serve', 'bench', 'reset', 'diff', 'doctor', 'questions', '--watch'])
      expect(r.stdout).toContain(command);
  });

  it('suggests commands the way the learner runs them: ./lab where pnpm may not be on PATH', async () => {
    const viaWrapper = await lab(['list'], { env: { ...env, LAB_COMMAND: './lab' } });
    expect(viaWrapper.stdout).toMatch(/next up: \.\/lab [a-z-]+/);
    expect(viaWrapper.stdout).not.toContain('pnpm lab');
    const help = await lab(['help'], { env: { LAB_COMMAND: './lab' } });
    expect(help.stdout).toMatch(/^ {2}\.\/lab hint <lab> +the next hint/m);
    expect(help.stdout).not.toContain('pnpm lab');
    const viaPnpm = await lab(['list'], { env });
    expect(viaPnpm.stdout).toMatch(/next up: pnpm lab [a-z-]+/);
  });
});

describe('bad input: a message, exit code 2, no stack trace', () => {
  it('an unknown lab gets a suggestion', async () => {
    const r = await lab(['rate-limitr'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Did you mean rate-limiter?');
    expect(hasStackTrace(r.out)).toBe(false);
  });

  it('an option typed as a command says how it is written', async () => {
    const r = await lab(['watch', 'rate-limiter'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pnpm lab rate-limiter --watch');
    const bare = await lab(['watch'], { env });
    expect(bare.stderr).toContain('pnpm lab <lab> --watch');
  });

  it('an unknown lab after a command gets a suggestion too', async () => {
    const r = await lab(['hint', 'ratelimiter'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Did you mean rate-limiter?');
  });

  it('an unknown command gets a suggestion', async () => {
    const r = await lab(['questoins'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Did you mean questions?');
    expect(hasStackTrace(r.out)).toBe(false);
  });

  it('an unknown option is named', async () => {
    const r = await lab(['list', '--colour'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("'--colour'");
    expect(hasStackTrace(r.out)).toBe(false);
  });

  it.each([['abc'], ['99999'], ['-1'], ['80.5']])('serve rejects --port %s before starting anything', async (port) => {
    const r = await lab(['serve', 'rate-limiter', `--port=${port}`], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--port must be a whole number from 0 to 65535');
    expect(r.stdout).not.toContain('listening');
  });

  it('an option given to the wrong command says where it belongs', async () => {
    const r = await lab(['rate-limiter', '--port', '3000'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pnpm lab serve');
  });

  it('reset without a terminal and without --yes refuses and changes nothing', async () => {
    const file = join(repo, 'labs', 'rate-limiter', 'src', 'rate-limiter.ts');
    const before = readFileSync(file, 'utf8');
    const r = await lab(['reset', 'rate-limiter'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--yes');
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('a lab command without a lab says which labs there are', async () => {
    const r = await lab(['hint'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('rate-limiter');
  });
});

describe('pnpm lab questions', () => {
  it('finds questions by word and says how many of the catalog match', async () => {
    const all = catalog().questions;
    const r = await lab(['questions', 'cache'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`(\\d+) of ${all.length} questions match "cache"`));
    const shown = [...r.stdout.matchAll(/^\s{2}([a-z]+-\d+)\s/gm)].map((m) => m[1]);
    const expected = all.filter((q) => /cach/i.test(q.question)).map((q) => q.id);
    expect(expected.length).toBeGreaterThan(0);
    for (const id of expected) expect(shown).toContain(id);
    for (const id of shown) expect(all.map((q) => q.id)).toContain(id);
  });

  it('points a question with a runnable lab at the command that runs it', async () => {
    const r = await lab(['questions', 'rate', 'limit'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('pnpm lab rate-limiter');
  });

  it('says so, with exit code 1, when nothing matches', async () => {
    const r = await lab(['questions', 'qqqzzzxxx'], { env });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('No question matches');
  });

  it('--coverage counts the questions whose lab exists in labs/', async () => {
    const all = catalog().questions;
    const slugs = labsOnDisk().map((l) => l.slug);
    const runnable = all.filter((q) => q.lab && slugs.includes(q.lab)).length;
    const r = await lab(['questions', '--coverage'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${runnable} of ${all.length} questions have a runnable lab`);
  });

  it('--markdown prints QUESTIONS.md with every question', async () => {
    const r = await lab(['questions', '--markdown'], { env });
    expect(r.code).toBe(0);
    for (const q of catalog().questions) expect(r.stdout).toContain(`| ${q.id} |`);
  });
});

/**
 * A TCP listener on 127.0.0.1 that counts the connections made to it and either closes each at once
 * (`close`: a port that answers nothing) or holds it open in silence (`hold`: a server that never says
 * hello). Disposing it closes it and what it holds.
 */
async function countingListener(mode: 'close' | 'hold') {
  const held = new Set<Socket>();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.on('error', () => {});
    if (mode === 'close') socket.destroy();
    else held.add(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    async [Symbol.asyncDispose]() {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('services', () => {
  it("a configured service that does not answer is reported in the doctor's words, tried once, before any test runs", async () => {
    await using redis = await countingListener('close');
    const r = await lab(['rate-limiter'], { env: { ...env, REDIS_URL: `redis://127.0.0.1:${redis.port}` } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('does not answer');
    // The URL the learner set is final: one probe, no other provider tried, no spec started.
    expect(redis.connections()).toBe(1);
    expect(r.out).not.toContain('Tried:');
    expect(r.stdout).not.toContain('Baseline');
  });

  it('doctor names every service and reports one still being looked for instead of waiting for it', async () => {
    // A broker that accepts and never answers: its probe would wait 4 s; the doctor's budget is 3 s, so it
    // reports the broker as still starting and leaves (timers fire in the order they fall due).
    await using kafka = await countingListener('hold');
    const r = await lab(['doctor'], {
      env: {
        ...env,
        REDIS_URL: 'redis://127.0.0.1:1',
        KAFKA_BROKERS: `127.0.0.1:${kafka.port}`,
        LABS_DOCTOR_BUDGET_MS: '3000',
      },
    });
    for (const name of ['Node', 'pnpm', 'Docker', 'Redis', 'PostgreSQL', 'RabbitMQ', 'Kafka'])
      expect(r.stdout).toContain(name);
    expect(r.stdout).toMatch(/✗ Redis .*does not answer|✗ Redis/);
    expect(r.stdout).toMatch(/blocks [a-z-]*rate-limiter/);
    expect(r.stdout).toMatch(/… Kafka +still starting after 3 s/);
    expect(kafka.connections()).toBe(1);
    // Bare doctor reports; it does not fail a learner who only wants the labs that need other services.
    expect(r.code).toBe(0);
  });

  it("doctor <lab> judges that lab's needs: exit 1 when one of its services is missing, 0 when another is", async () => {
    const down = { ...env, REDIS_URL: 'redis://127.0.0.1:1', LABS_DOCTOR_BUDGET_MS: '3000' };
    const needsRedis = await lab(['doctor', 'rate-limiter'], { env: down });
    expect(needsRedis.stdout).toContain('rate-limiter needs: Redis');
    expect(needsRedis.stdout).not.toContain('RabbitMQ');
    expect(needsRedis.code).toBe(1);
    const needsPostgres = await lab(['doctor', 'n-plus-one'], { env: down });
    expect(needsPostgres.stdout).not.toMatch(/Redis/);
    expect(needsPostgres.code).toBe(0);
    const typo = await lab(['doctor', 'rate-limitr'], { env });
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('Did you mean rate-limiter?');
  });
});

describe('pnpm lab <lab> --solution', () => {
  it('runs the spec against the reference and reports every test passing, with what to do next', async () => {
    const r = await lab(['rate-limiter', '--solution'], { env });
    expect(r.code).toBe(0);
    const passed = r.stdout.match(/All (\d+) tests pass/);
    expect(passed).not.toBeNull();
    expect(r.stdout).toMatch(/Challenges: (\d+) of \1 pass/);
    expect(r.stdout).toContain('pnpm lab bench rate-limiter');
    // --solution never counts as the learner's progress
    const list = await lab(['list'], { env });
    expect(list.stdout).not.toMatch(/rate-limiter\s+solved/);
  });
});

describe('one toolchain rule each', () => {
  const nvmrc = readFileSync(join(repo, '.nvmrc'), 'utf8').trim();
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));

  it("keeps the Node version in .nvmrc, and package.json's engines and ./lab agree with it", () => {
    expect(pkg.engines.node).toBe(`>=${nvmrc}`);
    const wrapper = readFileSync(join(repo, 'lab'), 'utf8');
    expect(wrapper).toContain('< .nvmrc');
    expect(wrapper).toContain('"packageManager"');
    expect(pkg.packageManager).toMatch(/^pnpm@\d+\.\d+\.\d+$/);
  });

  it('refuses an older Node with the version to install, before any TypeScript loads', async () => {
    const older = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => {
      try {
        return (
          Number(execFileSync(p, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' })) < Number(nvmrc)
        );
      } catch {
        return false;
      }
    });
    if (!older) return; // no older Node on this machine to try
    const r = spawnSync(older, [join(repo, 'shared', 'cli', 'bin', 'lab.js'), 'list'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`the labs need Node ${nvmrc} (.nvmrc)`);
    expect(hasStackTrace(r.stderr)).toBe(false);
  });
});

describe('pnpm lab test / check <lab>', () => {
  it('names an unknown lab with a suggestion, exit 2, before running anything', async () => {
    for (const command of ['test', 'check']) {
      const r = await lab([command, 'rate-limitr']);
      expect(r.code, command).toBe(2);
      expect(r.stderr).toContain('There is no lab called "rate-limitr". Did you mean rate-limiter?');
      expect(hasStackTrace(r.out)).toBe(false);
    }
  });
});

describe('pnpm lab serve --latency', () => {
  it('refuses a distance it cannot read, or a service the lab does not use, with the valid forms and exit 2', async () => {
    for (const [value, says] of [
      ['redis=fast', 'must be a duration such as 1ms'],
      ['mysql=1ms', 'unknown service "mysql"'],
      ['postgres=1ms', 'rate-limiter does not use postgres'],
    ] as const) {
      const r = await lab(['serve', 'rate-limiter', '--latency', value]);
      expect(r.code, value).toBe(2);
      expect(r.stderr).toContain(says);
      expect(hasStackTrace(r.out)).toBe(false);
    }
  });
});
