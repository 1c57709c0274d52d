/**
 * The one hash every router in this lab uses. It must give the same number for the same key in every
 * process, on every machine and in every version, forever: a shard key's hash decides where its rows
 * live. So not a language's built-in string hash (randomised per process in many runtimes) and not
 * PostgreSQL's internal `hashtext` (not promised stable across major versions): the first four bytes
 * of the key's MD5, read as an unsigned 32-bit integer. MD5 is broken as a signature, which does not
 * matter here; what matters is that it is fixed, fast enough and spreads similar keys evenly.
 */
import { createHash } from 'node:crypto';

/** A stable, well-spread unsigned 32-bit hash of `key` (0 to 2^32 - 1). */
export function hash32(key: string): number {
  return createHash('md5').update(key).digest().readUInt32BE(0);
}
