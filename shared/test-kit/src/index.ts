/**
 * @labs/test-kit: what lab specs (and lab servers) share. Fixtures are AsyncDisposable: `await using redis = await useRedis()`.
 */
export { deleteByPrefix, listen, PortInUseError, uniqueId, untilInterrupted, useKafka, usePostgres, useRabbitMQ, useRedis } from './fixtures.ts';
export type { KafkaFixture, KafkaFixtureOptions, Listening, PostgresFixture, RabbitFixture, RedisFixture } from './fixtures.ts';
export { readLabPackage, type LabManifest, type LabPackage } from './lab-manifest.ts';
export { countQueries, type QueryCounter } from './query-counter.ts';
