/**
 * @labs/test-kit: what lab specs share. Fixtures are AsyncDisposable: `await using redis = await useRedis()`.
 * Servers are started with the lab kit (`startLab`, `listen`), re-exported here for specs.
 */
export { listen, type Listening, PortInUseError, uniqueId, untilInterrupted } from '@labs/lab-kit';
export { deleteByPrefix } from '@labs/services';
export { type DelayingProxy, type DelayOptions, delayingProxy, type StallingProxy, stallingProxy } from './faults.ts';
export {
  MALFORMED_PAYLOADS,
  type MalformedPayload,
  malformedMessagesSent,
  type ProduceMalformedOptions,
  type ProducedAt,
  produceMalformed,
  publishMalformed,
  type PublishMalformedOptions,
  queueDepth,
  type RabbitDestination,
  untilGroupCommitted,
  untilQueueHolds,
} from './malformed.ts';
export {
  describeIncidents,
  expectExit,
  type ProcessIncident,
  takeProcessIncidents,
  UNHANDLED_PATTERN,
  watchProcesses,
} from './processes.ts';
export { useKafka, usePostgres, useRabbitMQ, useRedis } from './fixtures.ts';
export type {
  KafkaFixture,
  KafkaFixtureOptions,
  PostgresFixture,
  RabbitFixture,
  RedisFixture,
  RedisFixtureOptions,
} from './fixtures.ts';
export { readLabPackage, type InvariantPolicy, type LabManifest, type LabPackage } from './lab-manifest.ts';
export {
  type Credential,
  credentialsInPostgres,
  credentialsInRedis,
  expectEveryKeyExpires,
  expectNoCredentialAtRest,
  expectMalformedMessageSent,
  expectNoProcessDied,
  type Finding,
  INVARIANT_NAMES,
  InvariantError,
  type InvariantName,
  type InvariantOptions,
  keysWithoutExpiry,
  type LabUnderTest,
  recordCredential,
  recordedCredentials,
  useLab,
} from './invariants.ts';
export { meterSql, type SentSql, type SqlMeter } from '@labs/lab-kit';
