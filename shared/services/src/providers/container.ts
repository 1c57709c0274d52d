import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { SERVICES, type ServiceKind } from '../kinds.ts';
import { kafkaContainer } from './kafka-container.ts';
import { service, skip, type Provider } from './types.ts';

/** Environment and command per image, matching docker-compose.yml (Kafka has its own module). */
const CONTAINER_SETUP: Record<
  Exclude<ServiceKind, 'kafka'>,
  { env?: Record<string, string>; port: number; url(host: string, port: number): string }
> = {
  redis: { port: 6379, url: (h, p) => `redis://${h}:${p}` },
  postgres: {
    port: 5432,
    env: { POSTGRES_PASSWORD: 'postgres' },
    url: (h, p) => `postgres://postgres:postgres@${h}:${p}/postgres`,
  },
  rabbitmq: { port: 5672, url: (h, p) => `amqp://guest:guest@${h}:${p}` },
};

/** True when a Docker engine answers its ping within a second. */
export async function dockerEngineAnswers(): Promise<boolean> {
  const host = process.env.DOCKER_HOST;
  if (host && !host.startsWith('unix://')) return true; // a remote engine: let testcontainers find out
  const socketPath = host ? host.slice('unix://'.length) : '/var/run/docker.sock';
  if (!existsSync(socketPath)) return false;
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Step 3: a throwaway container through testcontainers, when a Docker engine answers. */
export const fromContainer: Provider = async (kind) => {
  if (!(await dockerEngineAnswers())) return skip('no Docker engine answers');
  if (kind === 'kafka') return kafkaContainer();
  // Loaded only here: testcontainers is large and most runs never need it.
  const { GenericContainer, Wait } = await import('testcontainers');
  const setup = CONTAINER_SETUP[kind];
  const container = await new GenericContainer(SERVICES[kind].image)
    .withEnvironment(setup.env ?? {})
    .withExposedPorts(setup.port)
    .withWaitStrategy(Wait.forListeningPorts())
    .withStartupTimeout(60_000)
    .start();
  const host = container.getHost();
  const port = container.getMappedPort(setup.port);
  return {
    ok: true,
    service: service(
      kind,
      'container',
      setup.url(host, port),
      `container ${SERVICES[kind].image} on ${host}:${port}`,
      async () => {
        await container.stop();
      },
    ),
  };
};
