/**
 * `lab doctor [lab]`: Node, pnpm, Docker, and for each service where it resolves or the command that
 * provides it, with the labs a missing one blocks. Services are looked up in parallel and the whole
 * report is bounded in time: a service being started (a container image pulled, a broker booting) is
 * reported as such rather than waited for. Kafka is looked for, not assembled: the first lab that needs
 * it does that.
 *
 * Exit code: bare `doctor` fails only when Node is too old (a learner who wants the Redis labs is not
 * blocked by a missing Kafka); `doctor <lab>` fails when a service that lab needs is missing.
 */
import { spawnSync } from 'node:child_process';
import {
  SERVICE_KINDS,
  SERVICES,
  ServiceUnavailableError,
  dockerEngineAnswers,
  resolveService,
  stopServices,
  type ServiceKind,
} from '@labs/services';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { pinnedPnpm, wantedNodeMajor } from '../labs.ts';
import { c, say } from '../ui.ts';

/** How long the doctor waits for services before reporting what it has. */
const BUDGET_MS = Number(process.env.LABS_DOCTOR_BUDGET_MS ?? 8000);

type Finding = { ok: true; line: string } | { ok: false; line: string; tried: string[] } | { ok: 'pending' };

export async function doctor(labs: LabPackage[], only?: LabPackage): Promise<number> {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const wanted = wantedNodeMajor();
  const nodeOk = nodeMajor >= wanted;
  say(
    `${nodeOk ? c.green('✓') : c.yellow('!')} Node ${process.versions.node}${nodeOk ? '' : ` (the labs need Node ${wanted}, as .nvmrc says: nvm install ${wanted})`}`,
  );
  const pnpm = spawnSync('pnpm', ['--version'], { encoding: 'utf8', timeout: 5000 });
  const pinned = pinnedPnpm();
  const running = pnpm.status === 0 ? pnpm.stdout.trim().split('\n').at(-1) : undefined;
  if (!running) say(`${c.yellow('!')} pnpm not on PATH (npm i -g pnpm, or use ./lab, which installs pnpm ${pinned})`);
  else
    say(
      `${c.green('✓')} pnpm ${running}${running === pinned ? '' : c.dim(` (the project pins ${pinned}; ./lab uses that one)`)}`,
    );
  const docker = await dockerEngineAnswers();
  say(
    `${docker ? c.green('✓') : c.dim('-')} Docker engine ${docker ? 'answers' : 'not found (fine: the labs also use local servers and embedded engines)'}`,
  );

  const kinds = only ? SERVICE_KINDS.filter((k) => only.lab.services.includes(k)) : SERVICE_KINDS;
  if (only) say(c.bold(`${only.slug} needs: ${kinds.map((k) => SERVICES[k].title).join(', ') || 'no service'}`));
  process.env.LABS_KAFKA_ASSEMBLE = '0';
  const findings = new Map<ServiceKind, Finding>(kinds.map((k) => [k, { ok: 'pending' }]));
  const lookups = kinds.map(async (kind) => {
    try {
      const svc = await resolveService(kind, { log: null });
      findings.set(kind, { ok: true, line: `${svc.provider}: ${svc.detail}` });
    } catch (error) {
      if (!(error instanceof ServiceUnavailableError)) throw error;
      // A forced provider or a configured URL that is down has no list: its message is the finding.
      const line = error.tried.length > 0 ? `Get it with: ${error.howToGet}` : error.message;
      findings.set(kind, { ok: false, line, tried: error.tried });
    }
  });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(lookups), new Promise((resolve) => (timer = setTimeout(resolve, BUDGET_MS)))]);
  clearTimeout(timer);

  let missingNeeded = 0;
  for (const kind of kinds) {
    const finding = findings.get(kind)!;
    const neededBy = (only ? [only] : labs).filter((l) => l.lab.services.includes(kind)).map((l) => l.slug);
    const needs = c.dim(
      neededBy.length === 0
        ? '  (no lab needs it yet)'
        : finding.ok === false
          ? `  (blocks ${neededBy.join(', ')})`
          : `  (needed by ${neededBy.join(', ')})`,
    );
    const title = SERVICES[kind].title.padEnd(11);
    if (finding.ok === true) say(`${c.green('✓')} ${title} ${finding.line}${needs}`);
    else if (finding.ok === 'pending')
      say(`${c.yellow('…')} ${title} still starting after ${BUDGET_MS / 1000} s; a lab will wait for it${needs}`);
    else {
      if (neededBy.length > 0) missingNeeded++;
      say(`${neededBy.length > 0 ? c.red('✗') : c.dim('-')} ${title} ${finding.line}${needs}`);
      for (const t of finding.tried) say(c.dim(`    - ${t}`));
    }
  }
  if (only && missingNeeded > 0) say(c.red(`${only.slug} cannot run until the service above is there.`));
  else if (!only && missingNeeded > 0) say(c.dim('Labs that need none of the missing services run as they are.'));
  const code = !nodeOk || (only && missingNeeded > 0) ? 1 : 0;
  const pending = [...findings.values()].some((f) => f.ok === 'pending');
  if (pending) {
    say(c.dim('Leaving now; what was being started is stopped.'));
    process.exit(code); // a provider still starting cannot be awaited; the exit hooks stop it
  }
  await stopServices();
  return code;
}
