/**
 * docker-compose.yml must publish each service on the port the resolver probes, with the image the
 * container provider starts and a healthcheck (so `docker compose up -d --wait` waits for it).
 * Its syntax is checked by Docker's own `compose config` where it is installed (no engine needed).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SERVICE_KINDS, SERVICES } from '../src/index.ts';

const root = join(import.meta.dirname, '..', '..', '..');
const composeFile = join(root, 'docker-compose.yml');
const compose = parse(readFileSync(composeFile, 'utf8')) as {
  services: Record<string, { image: string; ports: string[]; healthcheck?: { test: unknown } }>;
};

describe('docker-compose.yml', () => {
  for (const kind of SERVICE_KINDS) {
    it(`publishes ${kind} on 127.0.0.1:${SERVICES[kind].defaultPort} with the resolver's image and a healthcheck`, () => {
      const svc = compose.services[kind];
      expect(svc, `no "${kind}" service`).toBeDefined();
      expect(svc!.ports).toContain(`127.0.0.1:${SERVICES[kind].defaultPort}:${SERVICES[kind].defaultPort}`);
      expect(svc!.image).toBe(SERVICES[kind].image);
      expect(svc!.healthcheck?.test).toBeTruthy();
    });
  }

  // The real validator is Docker's own: `docker compose config` (plugin) or `docker-compose config`, neither
  // needing an engine. A `docker` client without the compose plugin answers "unknown shorthand flag" to
  // `docker compose -f`: that is "no validator here", not a verdict, so each candidate is asked its
  // version first. .ci/run installs docker-compose and validates the file itself too, so CI never skips.
  const validator = composeValidator();
  it.skipIf(!validator)(
    `is valid for docker compose (${validator?.join(' ') ?? 'no docker compose here: skipped'} config)`,
    () => {
      const [command, ...prefix] = validator!;
      const run = spawnSync(command!, [...prefix, '-f', composeFile, 'config', '-q'], { encoding: 'utf8' });
      expect(run.stderr.trim(), run.stderr).toBe('');
      expect(run.status).toBe(0);
    },
  );
});

/** The first compose command that answers its own version, or undefined. */
function composeValidator(): string[] | undefined {
  const candidates = [['docker', 'compose'], ['docker-compose']];
  return candidates.find(
    ([command, ...prefix]) => spawnSync(command!, [...prefix, 'version'], { encoding: 'utf8' }).status === 0,
  );
}
