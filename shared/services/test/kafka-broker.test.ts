/**
 * The Kafka that the binary step starts, at the version shared/services/kafka/pom.xml pins: kafkajs, the
 * labs' client, works against it end to end (this is why that version was chosen), and stopping it
 * leaves neither a JVM nor its temporary folder behind. Runs wherever Kafka is installed or can be
 * assembled (a JDK 17+ and Maven: the binary step assembles it on first need, as on CI).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { probe, resolveService, SERVICES, stopServices, type ResolvedService } from '../src/index.ts';
import { cannotAssemble } from '../src/providers/kafka-assemble.ts';
import { findJava, findKafka } from '../src/providers/kafka-binary.ts';

const runnable = findJava() !== undefined && (!('missing' in findKafka()) || (await cannotAssemble()) === undefined);

/** The pid and config folder of the Kafka JVM whose listener is on `port` (found through `ps`). */
function brokerProcess(port: number): { pid: number; dir: string } | undefined {
  const ps = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).stdout;
  for (const line of ps.split('\n')) {
    const match = /^\s*(\d+)\s.*\bkafka\.Kafka\s+(\S+server\.properties)\s*$/.exec(line);
    if (match && existsSync(match[2]!) && readFileSync(match[2]!, 'utf8').includes(`PLAINTEXT://127.0.0.1:${port}`)) {
      return { pid: Number(match[1]), dir: dirname(match[2]!) };
    }
  }
  return undefined;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the pinned Kafka version', () => {
  it('is the same in kafka/pom.xml (the binary step) and in the image the container step and docker-compose.yml run', () => {
    const pom = readFileSync(join(import.meta.dirname, '..', 'kafka', 'pom.xml'), 'utf8');
    const pinned = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    expect(SERVICES.kafka.image).toBe(`apache/kafka:${pinned}`);
  });
});

describe('finding Kafka', () => {
  it('takes an explicit KAFKA_HOME first, and reads the version off its broker jar', () => {
    const home = mkdtempSync(join(tmpdir(), 'labs-kafka-home-'));
    try {
      mkdirSync(join(home, 'libs'));
      writeFileSync(join(home, 'libs', 'kafka_2.13-9.8.7.jar'), '');
      vi.stubEnv('KAFKA_HOME', home);
      expect(findKafka()).toEqual({ libs: join(home, 'libs'), where: `KAFKA_HOME=${home}`, version: '9.8.7' });
    } finally {
      vi.unstubAllEnvs();
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('when nothing provides Kafka, the error names ./lab setup kafka as the way to get it', async () => {
    vi.stubEnv('LABS_PROVIDER', 'kafka:embedded');
    try {
      await expect(resolveService('kafka', { log: null })).rejects.toThrow(
        /Kafka is not available[\s\S]*Get it with: \.\/lab setup kafka/,
      );
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe.skipIf(!runnable)('the binary provider: Apache Kafka', () => {
  let svc: ResolvedService;

  beforeAll(async () => {
    vi.stubEnv('LABS_PROVIDER', 'kafka:binary');
    svc = await resolveService('kafka', { log: null });
    // On a machine that has never assembled Kafka this includes Maven's download (about a minute).
  }, 15 * 60_000);

  afterAll(async () => {
    await stopServices();
    vi.unstubAllEnvs();
  });

  it('kafkajs produces keyed messages, consumes them all in a group, commits them, and deletes the topic', async () => {
    expect(svc.provider).toBe('binary');
    const kafka = new Kafka({ clientId: 'labs-proof', brokers: [svc.url], logLevel: logLevel.WARN });
    const topic = `labs-proof-${process.pid}`;
    const groupId = `${topic}-group`;
    const total = 60;
    const admin = kafka.admin();
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 500 });
    try {
      await admin.connect();
      expect(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true })).toBe(true);

      await producer.connect();
      const messages = Array.from({ length: total }, (_, i) => ({ key: `user-${i % 6}`, value: String(i) }));
      await producer.send({ topic, acks: -1, messages });

      const seen: { key: string; partition: number; value: number }[] = [];
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        consumer
          .run({
            autoCommit: false,
            eachMessage: async ({ partition, message }) => {
              seen.push({ key: message.key!.toString(), partition, value: Number(message.value!.toString()) });
              await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
              if (seen.length === total) resolve();
            },
          })
          .catch(reject);
      });

      // Every message once; each key on one partition, in the order it was produced.
      expect(seen.map((m) => m.value).sort((a, b) => a - b)).toEqual(messages.map((_, i) => i));
      for (const key of new Set(seen.map((m) => m.key))) {
        const ofKey = seen.filter((m) => m.key === key);
        expect(new Set(ofKey.map((m) => m.partition)).size).toBe(1);
        expect(ofKey.map((m) => m.value)).toEqual(ofKey.map((m) => m.value).sort((a, b) => a - b));
      }
      await consumer.disconnect();

      // The group's committed offsets add up to everything it read (-1: a partition no key landed on).
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(committed!.partitions.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0)).toBe(total);

      await admin.deleteTopics({ topics: [topic] });
      await admin.deleteGroups([groupId]);
      // The broker applies a deletion a moment after it acknowledges it.
      await vi.waitFor(async () => expect(await admin.listTopics()).not.toContain(topic), { timeout: 5000 });
    } finally {
      await Promise.all([consumer.disconnect(), producer.disconnect()]);
      await admin.disconnect();
    }
  }, 30_000);

  it('kafkajs transactions: a read_committed consumer sees what was committed, never what was aborted', async () => {
    // Quiet: kafkajs logs the broker's retriable answers here (coordinator loading, a previous
    // transaction still completing) as errors, although it retries them and the test checks the outcome.
    const kafka = new Kafka({ clientId: 'labs-proof-tx', brokers: [svc.url], logLevel: logLevel.NOTHING });
    const topic = `labs-proof-tx-${process.pid}`;
    const admin = kafka.admin();
    const producer = kafka.producer({
      transactionalId: topic,
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    const consumer = kafka.consumer({ groupId: `${topic}-group`, maxWaitTimeInMs: 500 });
    try {
      await admin.connect();
      await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
      await producer.connect();
      for (const [value, outcome] of [
        ['kept', 'commit'],
        ['dropped', 'abort'],
        ['kept too', 'commit'],
      ] as const) {
        const tx = await producer.transaction();
        await tx.send({ topic, messages: [{ value }] });
        await tx[outcome]();
      }
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const seen: string[] = [];
      await new Promise<void>((resolve, reject) => {
        consumer
          .run({
            eachMessage: async ({ message }) => {
              if (seen.push(message.value!.toString()) === 2) resolve();
            },
          })
          .catch(reject);
      });
      expect(seen).toEqual(['kept', 'kept too']);
      await consumer.disconnect();
      await admin.deleteTopics({ topics: [topic] });
    } finally {
      await Promise.all([consumer.disconnect(), producer.disconnect()]);
      await admin.disconnect();
    }
  }, 30_000);

  it('stops the broker: its JVM exits and its temporary folder is removed', async () => {
    const port = Number(svc.url.split(':')[1]);
    const broker = brokerProcess(port);
    expect(broker, `no kafka.Kafka process listens on ${port}`).toBeDefined();
    await stopServices();
    expect(isRunning(broker!.pid)).toBe(false);
    expect(existsSync(broker!.dir)).toBe(false);
    expect(await probe('kafka', '127.0.0.1', port, 500)).toBe(false);
  }, 20_000);
});
