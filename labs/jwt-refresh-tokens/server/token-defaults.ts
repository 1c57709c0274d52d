/**
 * The lab's token lifetimes and names, in a module of their own: the key ring (its JWKS grace), the
 * token code (starter and solution) and `server/lab.ts` all read them, and none of them imports another
 * for it.
 */
export const TOKEN_DEFAULTS = {
  accessTtlSec: 5 * 60,
  refreshTtlSec: 14 * 24 * 60 * 60,
  clockToleranceSec: 30,
  refreshRaceGraceMs: 10_000,
  issuer: 'http://localhost/backend-labs',
  audience: 'backend-labs-api',
} as const;
