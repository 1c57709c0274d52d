/**
 * Step 4 for Kafka: an Apache Kafka installation (KAFKA_HOME, `kafka-server-start` on PATH, or the
 * jars `./lab setup kafka` assembles from Maven Central into .tools/kafka/) run as a throwaway
 * single-node KRaft cluster: one JVM that is both broker and controller, on two free ports, with its
 * log dirs in a temporary folder that is deleted when it stops.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { assembleKafka, JAVA_HINT, toolsKafkaDir } from './kafka-assemble.ts';
import { findBinary, freePort, ownedTempDir, startChild, waitForServer } from './server-process.ts';
import { service, skip, type Attempt } from './types.ts';

/** A Kafka installation: the folder of its jars, and a few words on where it was found. */
export interface KafkaInstall {
  /** The folder holding kafka_2.13-<version>.jar and its dependencies. */
  readonly libs: string;
  /** For messages: "KAFKA_HOME=…", "PATH (…)" or ".tools/kafka". */
  readonly where: string;
  /** The Kafka version, when it can be read from the jar names or the setup marker. */
  readonly version?: string;
}

/** The Kafka version of the broker jar in `libs` (kafka_2.13-4.4.0.jar), if there is one. */
function versionOfLibs(libs: string): string | undefined {
  for (const file of readdirSync(libs)) {
    const match = /^kafka_2\.1[23]-([\d.]+)\.jar$/.exec(file);
    if (match) return match[1];
  }
  return undefined;
}

/** The jar folder of a Kafka distribution at `home`: libs/ in the Apache tarball, libexec/libs/ in Homebrew's. */
function libsOf(home: string): string | undefined {
  return [join(home, 'libs'), join(home, 'libexec', 'libs')].find(
    (dir) => existsSync(dir) && versionOfLibs(dir) !== undefined,
  );
}

/**
 * Finds Kafka. An explicit KAFKA_HOME wins; then a distribution whose `kafka-server-start` is on PATH;
 * then the project's own .tools/kafka, which `./lab setup kafka` pins to the version the labs are tested on.
 */
export function findKafka(): KafkaInstall | { missing: string } {
  const home = process.env.KAFKA_HOME?.trim();
  if (home) {
    const libs = libsOf(home);
    if (libs) return { libs, where: `KAFKA_HOME=${home}`, version: versionOfLibs(libs) };
  }
  const script = findBinary('kafka-server-start') ?? findBinary('kafka-server-start.sh');
  if (script) {
    // bin/kafka-server-start(.sh) sits beside libs/; Homebrew links it from elsewhere, hence realpath.
    const libs = libsOf(dirname(dirname(realpathSync(script))));
    if (libs) return { libs, where: `PATH (${script})`, version: versionOfLibs(libs) };
  }
  const tools = toolsKafkaDir();
  const marker = tools && join(tools, 'VERSION');
  if (tools && marker && existsSync(marker) && existsSync(join(tools, 'libs'))) {
    return { libs: join(tools, 'libs'), where: '.tools/kafka', version: readFileSync(marker, 'utf8').trim() };
  }
  const tried = [
    home ? `KAFKA_HOME=${home} has no libs/` : 'KAFKA_HOME is not set',
    script ? `${script} has no libs/ beside it` : 'kafka-server-start is not on PATH',
    '.tools/kafka is not assembled',
  ];
  return { missing: `no Kafka found (${tried.join('; ')})` };
}

/** The `java` to run Kafka with: JAVA_HOME's, else the one on PATH. */
export function findJava(): string | undefined {
  const home = process.env.JAVA_HOME?.trim();
  const fromHome = home && join(home, 'bin', 'java');
  return fromHome && existsSync(fromHome) ? fromHome : findBinary('java');
}

/** A KRaft cluster id: 16 random bytes, base64url. One starting with '-' would read as an option. */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/** One node, both roles, loopback only, every internal topic at one replica, tuned for tests. */
function serverProperties(port: number, controllerPort: number, logDir: string): string {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `log.dirs=${logDir}`,
    // A single broker cannot hold three replicas: the defaults would leave groups and transactions unusable.
    'offsets.topic.replication.factor=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    // One partition each: the coordinators load in a moment instead of creating 50 partitions first.
    'offsets.topic.num.partitions=1',
    'transaction.state.log.num.partitions=1',
    // Tests join a group and expect their partitions now, not after the default 3 s wait for more members.
    'group.initial.rebalance.delay.ms=0',
    'auto.create.topics.enable=true',
    '',
  ].join('\n');
}

/**
 * Kafka 4 logs through log4j 2, 3.x through reload4j: both get a config that sends warnings and errors
 * to stderr, whose last lines explain a failed start. The broker's INFO chatter is not needed.
 */
const LOG4J2 = [
  'rootLogger.level=WARN',
  'rootLogger.appenderRef.err.ref=ERR',
  'appender.err.type=Console',
  'appender.err.name=ERR',
  'appender.err.target=SYSTEM_ERR',
  'appender.err.layout.type=PatternLayout',
  'appender.err.layout.pattern=%p %m (%c)%n',
  '',
].join('\n');
const LOG4J1 = [
  'log4j.rootLogger=WARN, err',
  'log4j.appender.err=org.apache.log4j.ConsoleAppender',
  'log4j.appender.err.Target=System.err',
  'log4j.appender.err.layout=org.apache.log4j.PatternLayout',
  'log4j.appender.err.layout.ConversionPattern=%p %m (%c)%n',
  '',
].join('\n');

/**
 * JVM options: a bounded heap, and start-up over peak speed (C1 only, serial GC): on two cores this
 * saves about two seconds per start (format and broker), and a test broker never runs long enough for
 * C2 to pay off.
 */
function jvmOptions(dir: string, heap: string[]): string[] {
  return [
    ...heap,
    '-XX:TieredStopAtLevel=1',
    '-XX:+UseSerialGC',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${join(dir, 'log4j2.properties')}`,
    `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`,
  ];
}

/** How long the broker may take to answer once started (resolve.ts bounds the whole Kafka binary step, assembly included). */
const READY_TIMEOUT_MS = 90_000;

/**
 * Resolves once kafkajs sees the broker at `broker` (host:port) registered and its group coordinator
 * serving (its internal topic created), so the first test neither races the broker's start nor logs retries.
 */
export async function untilClientsAreServed(broker: string): Promise<void> {
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({
    clientId: 'labs-ready',
    brokers: [broker],
    logLevel: logLevel.NOTHING,
    retry: { retries: 20, maxRetryTime: 1000 },
  }).admin();
  await admin.connect();
  try {
    const { brokers } = await admin.describeCluster();
    if (brokers.length === 0) throw new Error('no broker is registered');
    await admin.describeGroups(['labs-ready']);
  } finally {
    await admin.disconnect();
  }
}

/** Starts the Kafka that {@link findKafka} finds as a throwaway single-node cluster. */
export async function kafkaBinary(): Promise<Attempt> {
  let install = findKafka();
  const java = findJava();
  if ('missing' in install) {
    // Nothing installed: assemble the pinned version into .tools/kafka, once, as `./lab setup kafka` would.
    const whyNot = await assembleKafka();
    if (whyNot) return skip(`${install.missing}; ${whyNot}`);
    install = findKafka();
    if ('missing' in install) return skip(install.missing);
  }
  if (!java)
    return skip(
      `Kafka is in ${install.where}, but java is not on PATH: install Java 17+ (sudo apt-get install openjdk-17-jre-headless)`,
    );
  const name = `Kafka ${install.version ?? '(version unknown)'} from ${install.where}`;

  // Owned from its first moment: a process that ends while the storage is formatted (`lab doctor`
  // leaving, a SIGKILL) takes the folder with it.
  const folder = ownedTempDir('labs-kafka-');
  const dir = folder.path;
  const port = await freePort();
  let controllerPort = await freePort();
  while (controllerPort === port) controllerPort = await freePort();
  const config = join(dir, 'server.properties');
  writeFileSync(config, serverProperties(port, controllerPort, join(dir, 'data')));
  writeFileSync(join(dir, 'log4j2.properties'), LOG4J2);
  writeFileSync(join(dir, 'log4j.properties'), LOG4J1);
  const classpath = join(install.libs, '*');

  // KRaft refuses unformatted log dirs: the storage tool writes the cluster id and the bootstrap metadata.
  try {
    await promisify(execFile)(
      java,
      [
        ...jvmOptions(dir, ['-Xmx256m']),
        '-cp',
        classpath,
        'kafka.tools.StorageTool',
        'format',
        '-t',
        clusterId(),
        '-c',
        config,
      ],
      // A few seconds when idle; on two busy cores (labs checked side by side) a JVM can take ten times that.
      { timeout: 60_000 },
    );
  } catch (error) {
    folder.remove();
    const { stderr = '', stdout = '', message } = error as { stderr?: string; stdout?: string; message: string };
    const said = `${stderr}${stdout}`.trim();
    // Kafka 4 needs Java 17: an older java fails here, before anything is started.
    const hint = said.includes('UnsupportedClassVersionError') ? ` (${JAVA_HINT})` : '';
    return skip(`${name}: formatting its storage failed: ${said.split('\n').slice(-2).join(' | ') || message}${hint}`);
  }

  // With `dir`, stopping removes the folder too, and so does this process's exit if it never stops it.
  const proc = startChild(
    java,
    [...jvmOptions(dir, ['-Xms256m', '-Xmx512m']), '-cp', classpath, 'kafka.Kafka', config],
    { cwd: dir, dir: folder },
  );
  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    await waitForServer('kafka', port, proc.child, READY_TIMEOUT_MS, proc.log);
    // Answering on its port is not yet serving clients: on two busy cores a broker has refused
    // kafkajs' connections for longer than its retries after that. Asked again while the JVM lives.
    for (;;) {
      try {
        await untilClientsAreServed(`127.0.0.1:${port}`);
        break;
      } catch (error) {
        if (proc.child.exitCode !== null) throw new Error(`exited with code ${proc.child.exitCode}: ${proc.log()}`);
        if (Date.now() > deadline) throw new Error(`${(error as Error).message}: ${proc.log()}`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  } catch (err) {
    await proc.stop();
    return skip(`${name} ${(err as Error).message}`);
  }
  return {
    ok: true,
    service: service('kafka', 'binary', `127.0.0.1:${port}`, `${name} on 127.0.0.1:${port}`, proc.stop),
  };
}
