/**
 * Finds a running service for a lab, trying each provider in the order LABS.md gives, and says which
 * one it used. Resolution is memoised per process: every caller in a process shares one server.
 */
import { SERVICES, isServiceKind, type ServiceKind } from './kinds.ts';
import { fromBinary } from './providers/binary.ts';
import { fromContainer } from './providers/container.ts';
import { fromEmbedded } from './providers/embedded.ts';
import { fromEnv } from './providers/env.ts';
import { fromLocalPort } from './providers/local-port.ts';
import {
  type Attempt,
  PROVIDER_ORDER,
  type Provider,
  type ProviderName,
  type ResolvedService,
} from './providers/types.ts';

const PROVIDERS: Record<ProviderName, Provider> = {
  env: fromEnv,
  'local-port': fromLocalPort,
  container: fromContainer,
  binary: fromBinary,
  embedded: fromEmbedded,
};

/** Thrown when no provider can supply a service; its message is meant for the learner as is. */
export class ServiceUnavailableError extends Error {
  override readonly name = 'ServiceUnavailableError';
  readonly kind: ServiceKind;
  /** One line per provider tried and why it did not apply (empty when there was nothing to try). */
  readonly tried: string[];
  /** The one command that provides the service. */
  readonly howToGet: string;
  constructor(kind: ServiceKind, message: string, tried: string[] = []) {
    super(message);
    this.kind = kind;
    this.tried = tried;
    this.howToGet = SERVICES[kind].howToGet;
  }
}

/**
 * The provider forced by `LABS_PROVIDER`, if any. Accepts one name for every service
 * (`LABS_PROVIDER=embedded`) or per service (`LABS_PROVIDER=postgres:embedded,redis:binary`).
 */
export function forcedProvider(kind: ServiceKind, setting = process.env.LABS_PROVIDER ?? ''): ProviderName | undefined {
  const entries = setting
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of entries) {
    const [a, b] = entry.split(':');
    const name = b === undefined ? a : isServiceKind(a ?? '') && a === kind ? b : undefined;
    if (name === undefined) continue;
    if (!(PROVIDER_ORDER as readonly string[]).includes(name)) {
      throw new ServiceUnavailableError(
        kind,
        `LABS_PROVIDER names an unknown provider "${name}". Use one of: ${PROVIDER_ORDER.join(', ')}.`,
      );
    }
    return name as ProviderName;
  }
  return undefined;
}

/** Rejects with a ServiceUnavailableError when `promise` takes longer than `ms`. */
function within<T>(kind: ServiceKind, ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ServiceUnavailableError(kind, `${SERVICES[kind].title}: ${what} did not finish within ${ms / 1000} s.`),
        ),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Longest a provider may take: starting a broker from its binary is the slow case. */
const PROVIDER_TIMEOUT_MS: Record<ProviderName, number> = {
  env: 5000,
  'local-port': 5000,
  container: 120_000,
  binary: 60_000,
  embedded: 30_000,
};

/** Kafka's binary step may first assemble Kafka from Maven Central (once per machine): minutes, not seconds. */
const timeoutOf = (kind: ServiceKind, name: ProviderName) =>
  kind === 'kafka' && name === 'binary' ? 15 * 60_000 : PROVIDER_TIMEOUT_MS[name];

async function resolveUncached(kind: ServiceKind): Promise<ResolvedService> {
  const forced = forcedProvider(kind);
  const order = forced ? [forced] : PROVIDER_ORDER;
  const tried: string[] = [];
  for (const name of order) {
    let attempt: Attempt;
    try {
      attempt = await within(kind, timeoutOf(kind, name), PROVIDERS[name](kind), `the ${name} provider`);
    } catch (err) {
      // A configured URL that is down is final: say so rather than quietly using another server.
      if (name === 'env') throw new ServiceUnavailableError(kind, (err as Error).message);
      attempt = { ok: false as const, reason: (err as Error).message.split('\n')[0] ?? String(err) };
    }
    if (attempt.ok) return attempt.service;
    tried.push(`${name}: ${attempt.reason}`);
  }
  const { title, howToGet } = SERVICES[kind];
  throw new ServiceUnavailableError(
    kind,
    `${title} is not available${forced ? ` (LABS_PROVIDER forces "${forced}")` : ''}. Tried:\n${tried.map((t) => `  - ${t}`).join('\n')}\nGet it with: ${howToGet}`,
    tried,
  );
}

const resolved = new Map<ServiceKind, Promise<ResolvedService>>();

/** Options for {@link resolveService}. */
export interface ResolveOptions {
  /** Where the one "which provider" line goes; `null` for silence. Defaults to stderr. */
  log?: ((line: string) => void) | null;
}

/**
 * Finds (or starts) a service of `kind` and prints one line saying which provider supplied it.
 * The result is shared by every caller in this process; stop it with {@link stopServices}.
 */
export function resolveService(kind: ServiceKind, options: ResolveOptions = {}): Promise<ResolvedService> {
  let pending = resolved.get(kind);
  if (!pending) {
    pending = resolveUncached(kind).then((svc) => {
      const log = options.log === undefined ? (line: string) => process.stderr.write(`${line}\n`) : options.log;
      if (process.env.LABS_QUIET !== '1') log?.(`[services] ${SERVICES[kind].title}: ${svc.provider} — ${svc.detail}`);
      return svc;
    });
    // A failure is not cached: the learner may start the service and try again in the same process.
    pending.catch(() => resolved.delete(kind));
    resolved.set(kind, pending);
  }
  return pending;
}

/** Stops the `kind` service if this process started it, and forgets it: the next resolve finds a new one. */
export async function stopService(kind: ServiceKind): Promise<void> {
  const pending = resolved.get(kind);
  resolved.delete(kind);
  await (await pending?.catch(() => undefined))?.stop();
}

/** Stops every service this process started (binaries, containers, embedded engines). */
export async function stopServices(): Promise<void> {
  await Promise.all([...resolved.keys()].map(stopService));
}
