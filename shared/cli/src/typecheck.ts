/**
 * The TypeScript compiler over one package (tsc -p .), its errors read as file:line:message. Vitest
 * strips types without checking them, so a spec can pass on code that does not type-check; this is the
 * check that catches it.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** One compiler error, with its file relative to the package. */
export interface CompilerError {
  file: string;
  line: number;
  message: string;
}

/** tsc's line format: `src/x.ts(12,5): error TS2322: Type 'string' is not assignable ...` */
const ERROR_LINE = /^(.+?)\((\d+),\d+\): error (TS\d+: .*)$/;
/** An error about the project itself (no tsconfig.json, a bad option): no file, no line. */
const PROJECT_ERROR = /^error (TS\d+: .*)$/;

/** Runs the compiler over the package in `dir` and returns its errors (none: it type-checks). */
export async function typecheck(dir: string): Promise<CompilerError[]> {
  const tsc = join(createRequire(join(dir, 'package.json')).resolve('typescript/package.json'), '..', 'bin', 'tsc');
  const output = await new Promise<string>((resolve) => {
    let text = '';
    // One thread: the compiler runs beside spec runs that already keep the cores busy, and its own
    // threads cost a third more CPU for no gain in wall time there (2.6 s of CPU against 1.7 s for background-jobs).
    const child = spawn(process.execPath, [tsc, '-p', '.', '--pretty', 'false', '--singleThreaded'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (chunk: Buffer) => (text += chunk));
    child.stderr.on('data', (chunk: Buffer) => (text += chunk));
    child.on('close', () => resolve(text));
    child.on('error', (error) => resolve(`${text}\n(tsc): error TS0: ${error.message}`));
  });
  return output.split('\n').flatMap((line) => {
    const match = ERROR_LINE.exec(line.trim());
    if (match) return [{ file: match[1]!, line: Number(match[2]), message: match[3]! }];
    const project = PROJECT_ERROR.exec(line.trim());
    return project ? [{ file: 'tsconfig.json', line: 0, message: project[1]! }] : [];
  });
}

/** `file:line message`, the way an editor and a terminal both link it. */
export const formatTypeError = (e: CompilerError) => `${e.file}:${e.line} ${e.message}`;
