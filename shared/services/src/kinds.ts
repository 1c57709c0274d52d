/**
 * The services a lab can ask for, and what the project knows about each: the environment variable that
 * overrides it, the port docker-compose.yml publishes, and how a learner gets one.
 */
export type ServiceKind = 'redis' | 'postgres' | 'rabbitmq' | 'kafka';

/** Every kind, in the order `pnpm lab doctor` reports them. */
export const SERVICE_KINDS: readonly ServiceKind[] = ['redis', 'postgres', 'rabbitmq', 'kafka'];

/** Static facts about one kind of service. */
export interface ServiceInfo {
  /** Human name, for messages. */
  readonly title: string;
  /** The environment variable that, when set, wins over every other provider. */
  readonly envVar: string;
  /** The port docker-compose.yml publishes on 127.0.0.1 (the local-port provider probes it). */
  readonly defaultPort: number;
  /** The URL a client uses for the default local port. */
  readonly defaultUrl: string;
  /** The image the container provider starts. Keep in step with docker-compose.yml. */
  readonly image: string;
  /** The one command that provides the service on a learner's machine. */
  readonly howToGet: string;
  /**
   * The URL schemes of its clients and the port each means when a URL names none (`redis://host`).
   * Empty for Kafka, whose clients take `host:port` lists rather than URLs.
   */
  readonly schemes: Readonly<Record<string, number>>;
  /** A word for a row that puts it at a distance ("db 1 ms away"); only URL services can be proxied. */
  readonly short: string;
}

/** What the project knows about each kind of service. */
export const SERVICES: Readonly<Record<ServiceKind, ServiceInfo>> = {
  redis: {
    title: 'Redis',
    envVar: 'REDIS_URL',
    defaultPort: 6379,
    defaultUrl: 'redis://127.0.0.1:6379',
    image: 'redis:8-alpine',
    howToGet: 'docker compose up -d --wait redis   (or: sudo apt-get install redis-server)',
    schemes: { 'redis:': 6379, 'rediss:': 6379 },
    short: 'redis',
  },
  postgres: {
    title: 'PostgreSQL',
    envVar: 'DATABASE_URL',
    defaultPort: 5432,
    defaultUrl: 'postgres://postgres:postgres@127.0.0.1:5432/postgres',
    image: 'postgres:18-alpine',
    howToGet:
      'docker compose up -d --wait postgres   (Postgres labs also run on embedded PGlite: LABS_PROVIDER=embedded)',
    schemes: { 'postgres:': 5432, 'postgresql:': 5432 },
    short: 'db',
  },
  rabbitmq: {
    title: 'RabbitMQ',
    envVar: 'AMQP_URL',
    defaultPort: 5672,
    defaultUrl: 'amqp://guest:guest@127.0.0.1:5672',
    image: 'rabbitmq:4-management-alpine',
    howToGet: 'docker compose up -d --wait rabbitmq   (or: sudo apt-get install rabbitmq-server)',
    schemes: { 'amqp:': 5672, 'amqps:': 5671 },
    short: 'broker',
  },
  kafka: {
    title: 'Kafka',
    envVar: 'KAFKA_BROKERS',
    defaultPort: 9092,
    defaultUrl: '127.0.0.1:9092',
    // The version shared/services/kafka/pom.xml pins for the binary step: one Kafka everywhere.
    image: 'apache/kafka:4.4.0',
    howToGet: './lab setup kafka   (needs a JDK 17+ and Maven; or: docker compose up -d --wait kafka)',
    schemes: {},
    short: 'kafka',
  },
};

/** True when `name` is one of the service kinds. */
export function isServiceKind(name: string): name is ServiceKind {
  return (SERVICE_KINDS as readonly string[]).includes(name);
}

/** Where a service URL points: host and port. */
export interface ServiceAddress {
  host: string;
  port: number;
}

/**
 * The host and port a service URL (redis://, postgres://, postgresql://, amqp:// and their TLS forms)
 * points at, with the scheme's default port when it names none. Throws for other schemes and for a
 * PostgreSQL URL that names its host in the query (a Unix socket): nothing can stand in front of those.
 */
export function serviceAddress(url: string): ServiceAddress {
  const parsed = URL.parse(url);
  if (parsed === null) throw new Error(`not a service URL: ${url}`);
  const defaultPort = SERVICE_KINDS.map((k) => SERVICES[k].schemes[parsed.protocol]).find((p) => p !== undefined);
  if (defaultPort === undefined) {
    const known = SERVICE_KINDS.flatMap((k) => Object.keys(SERVICES[k].schemes)).map((s) => `${s}//`);
    throw new Error(`cannot proxy ${parsed.protocol}// URLs; known: ${known.join(', ')} (${url})`);
  }
  if (parsed.searchParams.has('host') || parsed.hostname === '') {
    throw new Error(`cannot proxy a URL without a TCP host (a Unix socket?): ${url}`);
  }
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: parsed.port === '' ? defaultPort : Number(parsed.port),
  };
}
