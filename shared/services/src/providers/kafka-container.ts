/**
 * Step 3 for Kafka: a throwaway apache/kafka container, the image docker-compose.yml runs.
 *
 * A Kafka client asks the first broker where the brokers are and reconnects to the address it is told
 * (the advertised listener), so that address must be one the host can reach: the host port is chosen
 * before the container starts and bound to the broker's port, instead of a random mapping learnt
 * after start. (@testcontainers/kafka solves this too, but only for Confluent's cp-kafka image.)
 */
import { SERVICES } from '../kinds.ts';
import { untilClientsAreServed } from './kafka-binary.ts';
import { freePort } from './server-process.ts';
import { service, type Attempt } from './types.ts';

/** Single-node KRaft, as in docker-compose.yml, advertised at `host:port`. */
function kraftEnvironment(host: string, port: number): Record<string, string> {
  return {
    KAFKA_NODE_ID: '1',
    KAFKA_PROCESS_ROLES: 'broker,controller',
    KAFKA_LISTENERS: 'PLAINTEXT://:9092,CONTROLLER://:9093',
    KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://${host}:${port}`,
    KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
    KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
    KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
    KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '1',
    KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
    KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
    KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
    KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'true',
  };
}

/** Starts SERVICES.kafka.image with its listener advertised on a host port chosen here. */
export async function kafkaContainer(): Promise<Attempt> {
  const { GenericContainer, Wait, getContainerRuntimeClient } = await import('testcontainers');
  const host = (await getContainerRuntimeClient()).info.containerRuntime.host;
  // Free on this machine; with a remote engine it is a guess that almost always holds there too.
  const port = await freePort();
  const container = await new GenericContainer(SERVICES.kafka.image)
    .withExposedPorts({ container: 9092, host: port })
    .withEnvironment(kraftEnvironment(host, port))
    .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
    .withStartupTimeout(60_000)
    .start();
  const url = `${host}:${port}`;
  try {
    await untilClientsAreServed(url);
  } catch (err) {
    await container.stop();
    throw err;
  }
  return {
    ok: true,
    service: service('kafka', 'container', url, `container ${SERVICES.kafka.image} on ${url}`, async () => {
      await container.stop();
    }),
  };
}
