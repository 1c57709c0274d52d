import { SERVICES } from '../kinds.ts';
import { hostAndPort, probe } from '../probe.ts';
import { service, skip, type Provider } from './types.ts';

/** How long an explicitly configured URL may take to answer before we say it is down. */
const ENV_PROBE_MS = 4000;

/**
 * Step 1: the URL in the environment. An explicit URL that does not answer is an error, not a reason to
 * fall through: the learner asked for that server, so silently using another one would mislead them.
 */
export const fromEnv: Provider = async (kind) => {
  const { envVar, title, howToGet } = SERVICES[kind];
  const url = process.env[envVar]?.trim();
  if (!url) return skip(`${envVar} is not set`);
  let target: { host: string; port: number };
  try {
    target = hostAndPort(kind, url);
  } catch {
    throw new Error(`${envVar}="${url}" is not a valid ${title} URL (expected e.g. ${SERVICES[kind].defaultUrl}).`);
  }
  if (!(await probe(kind, target.host, target.port, ENV_PROBE_MS))) {
    throw new Error(
      `${title} at ${envVar}=${url} does not answer.\n` +
        `Start it, fix ${envVar}, or unset it to let the labs find ${title} themselves: ${howToGet}`,
    );
  }
  return { ok: true, service: service(kind, 'env', url, `${envVar} (${target.host}:${target.port})`) };
};
