/** Output helpers: colours that switch off without a terminal, and user errors without stack traces. */
import { isatty } from 'node:tty';
import pc from 'picocolors';

/**
 * Colour only for a terminal (or when FORCE_COLOR asks), never with NO_COLOR (no-color.org). picocolors
 * alone also colours whenever CI is set, which writes escape codes into CI logs and files.
 */
export const colour =
  !process.env.NO_COLOR &&
  (!!process.env.FORCE_COLOR?.replace(/^0$/, '') || (isatty(1) && process.env.TERM !== 'dumb'));

export const c = pc.createColors(colour);

/** Environment for a child whose output we pass on: the same colour decision as ours. */
export const colourEnv = (): NodeJS.ProcessEnv =>
  colour ? { FORCE_COLOR: '1', NO_COLOR: undefined } : { NO_COLOR: '1', FORCE_COLOR: undefined };

/** A mistake by the user (bad name, bad flag): printed as a message, exits with `code`, never a stack. */
export class UserError extends Error {
  override readonly name = 'UserError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

export const say = (line = '') => process.stdout.write(`${line}\n`);
export const warn = (line: string) => process.stderr.write(`${line}\n`);

// `pnpm lab list | head` closes the pipe early: that is the reader's choice, not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

/**
 * The command line as the learner runs it, for every command we suggest: `./lab` sets LAB_COMMAND
 * (on a machine where it installed pnpm into .tools/, `pnpm lab` would not be found), else `pnpm lab`.
 */
export const LAB = process.env.LAB_COMMAND || 'pnpm lab';
