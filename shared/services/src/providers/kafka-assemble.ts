/**
 * Apache Kafka assembled from Maven Central into the project's .tools/kafka/ on first need: the jars
 * shared/services/kafka/pom.xml names, copied by Maven, and a VERSION marker written last. `./lab setup
 * kafka` calls it; so does the binary step when no Kafka is found but a JDK 17+ and Maven are there, so
 * a learner's first `./lab test` needs no set-up command of its own.
 *
 * Several processes may need it at once (two labs checked side by side): one assembles, the others wait
 * for its lock folder to go. A lock whose owner died is taken over.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify, stripVTControlCharacters } from 'node:util';
import { findBinary } from './server-process.ts';
import { processAlive } from '../process-alive.ts';

/** What a learner installs when Java or Maven is missing. */
export const JAVA_HINT = 'install a JDK 17+ and Maven: sudo apt-get install openjdk-17-jre-headless maven';

/** The repository root: the first folder above this file that holds pnpm-workspace.yaml. */
export function repoRoot(from = import.meta.dirname): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

/** Where the project keeps its assembled Kafka: .tools/kafka/ (libs/ and the VERSION marker). */
export function toolsKafkaDir(): string | undefined {
  const root = repoRoot();
  return root && join(root, '.tools', 'kafka');
}

const pomPath = () => {
  const root = repoRoot();
  return root && join(root, 'shared', 'services', 'kafka', 'pom.xml');
};

/** The Kafka version the project pins (the pom's `kafka.version`). */
export function pinnedKafkaVersion(): string | undefined {
  const pom = pomPath();
  if (!pom || !existsSync(pom)) return undefined;
  return /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(readFileSync(pom, 'utf8'))?.[1];
}

/** True when .tools/kafka holds the pinned version, assembled after the pom last changed. */
export function kafkaIsAssembled(): boolean {
  const dest = toolsKafkaDir();
  const pom = pomPath();
  const marker = dest && join(dest, 'VERSION');
  if (!dest || !pom || !marker || !existsSync(marker)) return false;
  return (
    readFileSync(marker, 'utf8').trim() === pinnedKafkaVersion() && statSync(pom).mtimeMs <= statSync(marker).mtimeMs
  );
}

/** The major version of `java`, or 0 when it cannot be run. */
async function javaMajor(java: string): Promise<number> {
  try {
    // A JVM starting on a busy machine can take many seconds just to print its version.
    const { stderr, stdout } = await promisify(execFile)(java, ['-version'], { timeout: 60_000 });
    return Number(/version "(\d+)/.exec(`${stderr}${stdout}`)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Why Kafka cannot be assembled here (no JDK 17+, no Maven), or undefined when it can. */
export async function cannotAssemble(java = findBinary('java')): Promise<string | undefined> {
  const major = java ? await javaMajor(java) : 0;
  const mvn = findBinary('mvn');
  if (major >= 17 && mvn) return undefined;
  return `Kafka runs on Java 17+ and is assembled by Maven (found: java ${major || 'none'}, mvn ${mvn ? 'yes' : 'none'}): ${JAVA_HINT}`;
}

/** Takes the lock folder, or waits for whoever holds it; resolves true when this process holds it. */
async function lock(dir: string, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'owner'), String(process.pid));
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    // A lock whose owner is gone (killed mid-download) is stale. A lock without an owner file yet was
    // made a moment ago: wait.
    let owner = 0;
    try {
      owner = Number(readFileSync(join(dir, 'owner'), 'utf8')) || 0;
    } catch {
      // gone already, or not written yet
    }
    if (owner > 0 && !processAlive(owner)) rmSync(dir, { recursive: true, force: true });
    else if (kafkaIsAssembled()) return false;
    else if (Date.now() > deadline) throw new Error(`another process has been assembling Kafka for ${waitMs / 1000} s`);
    else await new Promise((r) => setTimeout(r, 500));
  }
}

/** Options for {@link assembleKafka}. */
export interface AssembleOptions {
  /** Progress lines (one when it starts, one when it is done). Defaults to stderr. */
  log?: (line: string) => void;
  /** Assemble again even when the pinned version is there. */
  force?: boolean;
}

/**
 * Makes sure .tools/kafka holds the pinned Kafka, assembling it with Maven if needed. Resolves with
 * undefined when it is there, or with the reason it cannot be (for the resolver's "Tried:" list).
 */
export async function assembleKafka(options: AssembleOptions = {}): Promise<string | undefined> {
  const { log = (line: string) => process.stderr.write(`${line}\n`), force = false } = options;
  const dest = toolsKafkaDir();
  const pom = pomPath();
  const version = pinnedKafkaVersion();
  if (!dest || !pom || !version) return 'the project has no shared/services/kafka/pom.xml to assemble Kafka from';
  if (!force && kafkaIsAssembled()) return undefined;
  // `lab doctor` looks without assembling: it reports what the first lab would do instead.
  if (!force && process.env.LABS_KAFKA_ASSEMBLE === '0')
    return 'it is not assembled yet (the first lab that needs Kafka assembles it, or: ./lab setup kafka)';
  const missing = await cannotAssemble();
  if (missing) return missing;

  mkdirSync(dirname(dest), { recursive: true });
  const lockDir = `${dest}.lock`;
  // Maven's first run also downloads its plugins: a minute on a good connection, more on a slow one.
  if (!(await lock(lockDir, 10 * 60_000))) return undefined; // another process assembled it meanwhile
  try {
    if (!force && kafkaIsAssembled()) return undefined;
    log(`Assembling Apache Kafka ${version} from Maven Central into .tools/kafka/ (once; about a minute) ...`);
    // What an interrupted run left (its process is gone: we hold the lock) goes first.
    for (const name of readdirSync(dirname(dest)))
      if (name.startsWith('kafka.partial-')) rmSync(join(dirname(dest), name), { recursive: true, force: true });
    const partial = `${dest}.partial-${process.pid}`;
    try {
      await promisify(execFile)(
        'mvn',
        ['-B', '-q', '-f', pom, 'dependency:copy-dependencies', `-DoutputDirectory=${join(partial, 'libs')}`],
        { timeout: 15 * 60_000, maxBuffer: 16 * 1024 * 1024 },
      );
    } catch (error) {
      rmSync(partial, { recursive: true, force: true });
      const { stdout = '', stderr = '', message } = error as { stdout?: string; stderr?: string; message: string };
      // Debian's Maven prints colour resets even with -B: they would garble the one line we keep.
      const said = stripVTControlCharacters(`${stdout}${stderr}`).trim();
      const lastError = said
        .split('\n')
        .filter((l) => l.includes('ERROR'))
        .slice(0, 2)
        .join(' | ');
      return `Maven could not assemble Kafka ${version}: ${lastError || message.split('\n')[0]}`;
    }
    // The marker is written last, in the new folder before it takes the old one's place: a run that was
    // interrupted leaves no marker, so the next one starts over.
    writeFileSync(join(partial, 'VERSION'), `${version}\n`);
    rmSync(dest, { recursive: true, force: true });
    renameSync(partial, dest);
    log(`Kafka ${version} is ready in .tools/kafka/ (${readdirSync(join(dest, 'libs')).length} jars).`);
    return undefined;
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}
