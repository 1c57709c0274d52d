/**
 * The user store: a few demo users whose passwords are kept only as argon2id hashes. The learner does
 * not edit this file; the lesson here is in the comments.
 *
 * argon2id is memory-hard: each guess costs the attacker 19 MiB of RAM for a few milliseconds, which
 * makes GPU and ASIC cracking of a stolen table expensive. The parameters are OWASP's minimum
 * recommendation (m=19 MiB, t=2, p=1); raise them until one login costs what your servers can afford.
 */
import { hash, verify, type Algorithm } from '@node-rs/argon2';

/** argon2id: resists GPU cracking (the "d" half) and side channels (the "i" half). */
export const PASSWORD_HASH = {
  algorithm: 2 as Algorithm, // Algorithm.Argon2id (a const enum, so written as its value)
  memoryCost: 19_456, // KiB
  timeCost: 2,
  parallelism: 1,
} as const;

export interface User {
  id: string;
  username: string;
  displayName: string;
  /** A PHC string, e.g. $argon2id$v=19$m=19456,t=2,p=1$salt$hash. Never the password. */
  passwordHash: string;
}

export type UserStore = Awaited<ReturnType<typeof createUserStore>>;

/** The demo accounts `pnpm lab serve` prints. */
export const DEMO_USERS = [
  { id: 'u-1', username: 'ada', displayName: 'Ada Lovelace', password: 'correct horse battery staple' },
  { id: 'u-2', username: 'grace', displayName: 'Grace Hopper', password: 'cobol-1959-compiler' },
] as const;

/** What the API may show about a user: everything but the hash. */
export function toPublic(user: User): Omit<User, 'passwordHash'> {
  return { id: user.id, username: user.username, displayName: user.displayName };
}

/**
 * Hashes the seed users' passwords (about 20 ms each) and returns the store. `onHash` is called once
 * per password hash computed at login (the load script counts them).
 */
export async function createUserStore(
  options: { seed?: ReadonlyArray<Omit<User, 'passwordHash'> & { password: string }>; onHash?: () => void } = {},
) {
  const { seed = DEMO_USERS, onHash = () => {} } = options;
  const users = await Promise.all(
    seed.map(async ({ password, ...rest }) => ({ ...rest, passwordHash: await hash(password, PASSWORD_HASH) })),
  );
  const byName = new Map(users.map((u) => [u.username.toLowerCase(), u]));
  const byId = new Map(users.map((u) => [u.id, u]));
  // Unknown usernames are checked against this hash too, so "no such user" takes as long as "wrong
  // password" and the response time does not reveal which usernames exist.
  const decoy = await hash('decoy password that matches nothing', PASSWORD_HASH);

  return {
    /** The user when `password` is theirs; otherwise undefined, in about the same time either way. */
    async verifyCredentials(username: string, password: string): Promise<User | undefined> {
      const user = byName.get(username.toLowerCase());
      // argon2 verify recomputes the hash and compares it in constant time.
      onHash();
      const ok = await verify(user?.passwordHash ?? decoy, password);
      return ok && user ? user : undefined;
    },
    findById: (id: string): User | undefined => byId.get(id),
  };
}
