import type { ServiceKind } from '../kinds.ts';

/** How a service was found, in the order LABS.md tries them. */
export type ProviderName = 'env' | 'local-port' | 'container' | 'binary' | 'embedded';

/** Every provider, in resolution order. */
export const PROVIDER_ORDER: readonly ProviderName[] = ['env', 'local-port', 'container', 'binary', 'embedded'];

/** A service that answers, and how to let it go. */
export interface ResolvedService extends AsyncDisposable {
  readonly kind: ServiceKind;
  readonly provider: ProviderName;
  /** What a client connects to: a URL, or for Kafka a `host:port` broker list. */
  readonly url: string;
  /** One human line: where it is and why this provider was used. */
  readonly detail: string;
  /** Stops what the provider started (a no-op for services it only found). */
  stop(): Promise<void>;
}

/** The outcome of one provider: a service, or the reason it did not apply (for the final error). */
export type Attempt = { ok: true; service: ResolvedService } | { ok: false; reason: string };

/** Tries to provide `kind`; never throws for "not available here", returns the reason instead. */
export type Provider = (kind: ServiceKind) => Promise<Attempt>;

/** Builds a ResolvedService whose stop() runs `stop` once. */
export function service(
  kind: ServiceKind,
  provider: ProviderName,
  url: string,
  detail: string,
  stop: () => Promise<void> = async () => {},
): ResolvedService {
  let stopping: Promise<void> | undefined;
  const once = () => (stopping ??= stop());
  return { kind, provider, url, detail, stop: once, [Symbol.asyncDispose]: once };
}

/** Shorthand for a provider that does not apply. */
export const skip = (reason: string): Attempt => ({ ok: false, reason });
