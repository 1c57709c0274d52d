/**
 * @labs/test-kit: what lab specs share. Fixtures are AsyncDisposable: `await using redis = await useRedis()`.
 * Servers are started with the lab kit (`startLab`, `listen`), re-exported here for specs.
 */
export { listen, type Listening, PortInUseError, uniqueId, untilInterrupted } from '@labs/lab-kit';
export { deleteByPrefix } from '@labs/services';
export { type StallingProxy, stallingProxy } from './faults.ts';
export { useKafka, usePostgres, useRabbitMQ, useRedis } from './fixtures.ts';
export type { KafkaFixture, KafkaFixtureOptions, PostgresFixture, RabbitFixture, RedisFixture } from './fixtures.ts';
export { readLabPackage, type LabManifest, type LabPackage } from './lab-manifest.ts';
export { meterSql, type SentSql, type SqlMeter } from '@labs/lab-kit';
