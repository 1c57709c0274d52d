/**
 * `lab serve <slug>`: started by the command line as `node serve.ts <lab folder>` (with the
 * `lab-solution` condition for --solution). Starts the lab's definition (`server/lab.ts`) on PORT,
 * prints where and what to try, and stops everything on Ctrl-C, SIGTERM or a closed terminal.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ServiceUnavailableError, stopServices } from '@labs/services';
import { z } from 'zod';
import type { LabDefinition } from './define-lab.ts';
import { startLab } from './define-lab.ts';
import { ConfigError, port, readConfig } from './input.ts';
import { PortInUseError, PortNotAllowedError, untilInterrupted } from './server.ts';

/** The command line that started this process, read first: see untilInterrupted. */
const PARENT = process.ppid;

/** Errors written for the reader: printed as they are, without a stack. */
const EXPECTED = [ConfigError, PortInUseError, PortNotAllowedError, ServiceUnavailableError];

async function serve(labDir: string): Promise<void> {
  const { default: lab } = (await import(pathToFileURL(join(labDir, 'server', 'lab.ts')).href)) as {
    default: LabDefinition<unknown, unknown>;
  };
  const { PORT } = readConfig(z.object({ PORT: port() }));
  const { title } = (JSON.parse(readFileSync(join(labDir, 'package.json'), 'utf8')) as { lab: { title: string } }).lab;
  try {
    await using running = await startLab(lab, { purpose: 'serve', port: PORT });
    const which = running.context.target === 'solution' ? 'the reference solution' : 'your code';
    console.log(`${title} lab (${which}) listening on ${running.url}`);
    for (const line of running.usage) console.log(line);
    console.log('Stop:  Ctrl-C');
    await untilInterrupted(PARENT);
  } finally {
    await stopServices(); // a server binary or embedded engine this process started
  }
}

const labDir = process.argv[2];
if (!labDir) {
  console.error('Usage: node serve.ts <lab folder> (the command line runs it: lab serve <lab>)');
  process.exit(2);
}
serve(labDir).catch((error: unknown) => {
  const expected = EXPECTED.some((type) => error instanceof type);
  console.error(expected ? (error as Error).message : `Could not start the lab: ${(error as Error).message ?? error}`);
  process.exitCode = 1;
});
