/**
 * @labs/services: finds the real servers a lab needs, in the order of ../../LABS.md:
 * env URL, default local port, container, local binary, embedded engine, else a clear error.
 */
export {
  SERVICES,
  SERVICE_KINDS,
  isServiceKind,
  serviceAddress,
  type ServiceAddress,
  type ServiceInfo,
  type ServiceKind,
} from './kinds.ts';
export { probe } from './probe.ts';
export { PROVIDER_ORDER, type ProviderName, type ResolvedService } from './providers/types.ts';
export { dockerEngineAnswers } from './providers/container.ts';
export { freePort } from './providers/server-process.ts';
export { processAlive } from './process-alive.ts';
export { assembleKafka, cannotAssemble, kafkaIsAssembled, pinnedKafkaVersion } from './providers/kafka-assemble.ts';
export {
  ServiceUnavailableError,
  forcedProvider,
  resolveService,
  stopService,
  stopServices,
  type ResolveOptions,
} from './resolve.ts';
export {
  createKafkaClient,
  createPgPool,
  createRedisClient,
  DeadlineError,
  deleteByPrefix,
  fromService,
  isKafkaOutage,
  isPostgresOutage,
  isRabbitOutage,
  isRedisOutage,
  type OutageSource,
  withinDeadline,
} from './clients.ts';
export { committed, ensureTopics, lag, logConsumerEvents, messagesIn } from './kafka-admin.ts';
export { requireServer } from './require-server.ts';
export { type AdminMessage, openRabbitAdmin, type RabbitAdmin } from './rabbit-admin.ts';
export { childServiceEnv } from './child-env.ts';
export { databaseUrl, dropDatabase, ensureDatabase } from './databases.ts';
export { serviceFingerprint } from './fingerprint.ts';
