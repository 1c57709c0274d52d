/**
 * The signing keys: an RS256 key pair per `kid`, the newest one current. Rotating adds a new current
 * key and marks the previous one retired (at the injected clock's time); whether this API still
 * trusts a retired key, and for how long, is the token code's decision. The JWKS, which other services
 * trust, drops a retired key after `retiredKeyGraceMs`. The learner does not edit this file.
 *
 * Keys live in this process's memory, which is right for one instance. Several instances would load
 * them from a shared secret store (a KMS, Vault, a mounted secret) so they agree on every `kid`.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { exportJWK, type JWK } from 'jose';
import { TOKEN_DEFAULTS } from './token-defaults.ts';

/** One signing key. Only the private half signs; the public half verifies. */
export interface SigningKey {
  /** Key id, sent in each token's header so a verifier can find the right key. */
  readonly kid: string;
  readonly alg: 'RS256';
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** Epoch ms when a newer key replaced it; undefined while it is the current key. */
  retiredAt?: number;
}

/** The ring {@link createKeyRing} makes: what the token code (and a spec) may ask of it. */
export type KeyRing = ReturnType<typeof createKeyRing>;

/**
 * A ring with one fresh key. `now` (epoch ms; tests pass a fake clock) times retirements;
 * `retiredKeyGraceMs` is how long the JWKS still lists a retired key: match the token service's key
 * grace (access token lifetime + clock tolerance), as the default does for the default lifetimes.
 */
export function createKeyRing(options: { now?: () => number; retiredKeyGraceMs?: number } = {}) {
  const now = options.now ?? Date.now;
  const graceMs = options.retiredKeyGraceMs ?? (TOKEN_DEFAULTS.accessTtlSec + TOKEN_DEFAULTS.clockToleranceSec) * 1000;
  const keys: SigningKey[] = [];

  function generate(): SigningKey {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const key: SigningKey = { kid: `k-${randomBytes(6).toString('hex')}`, alg: 'RS256', privateKey, publicKey };
    keys.unshift(key);
    return key;
  }

  generate();
  return {
    /** The key new tokens are signed with. */
    current: (): SigningKey => keys[0]!,
    /** A key by id, retired or not. */
    find: (kid: string) => keys.find((k) => k.kid === kid),
    /** Every key, newest first. */
    all: (): readonly SigningKey[] => keys,
    /** Makes a fresh key current and retires the previous one now. Returns the new key. */
    rotate(): SigningKey {
      const previous = keys[0]!;
      const next = generate();
      previous.retiredAt = now();
      return next;
    },
    /**
     * The public keys as a JSON Web Key Set, for `/.well-known/jwks.json`: the current key and the keys
     * still in their grace. Other services trust whatever is listed, so a retired key must leave the list.
     */
    async jwks(): Promise<{ keys: JWK[] }> {
      const published = keys.filter((k) => k.retiredAt === undefined || now() <= k.retiredAt + graceMs);
      const jwk = async (k: SigningKey) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: k.alg, use: 'sig' });
      return { keys: await Promise.all(published.map(jwk)) };
    },
  };
}
