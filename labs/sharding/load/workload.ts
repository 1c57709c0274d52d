/** What the load script sends: shared by the script and the servers it forks. */
import type { LoadOptions } from '@labs/bench';

/** The name of seeded tenant `i`. */
export const seededTenant = (i: number) => `t-${i}`;

/**
 * Alternating writes (one new note) and reads (the tenant's 20 newest notes, one page), each for a
 * tenant from `pick`. A page rather than the whole list: a tenant that gets much of the traffic also
 * grows fastest, and whole lists would make its reads heavier run after run.
 */
export function mixedRequests(pick: () => string): NonNullable<LoadOptions['requests']> {
  const body = JSON.stringify({ notes: [{ body: 'written under load' }] });
  return [
    {
      setupRequest: (req) => ({
        ...req,
        method: 'POST',
        path: `/api/tenants/${pick()}/notes`,
        headers: { 'content-type': 'application/json' },
        body,
      }),
    },
    { setupRequest: (req) => ({ ...req, method: 'GET', path: `/api/notes?tenants=${pick()}&limit=20` }) },
  ];
}

/**
 * A Zipf sampler over `count` tenants named `${prefix}${rank}`: rank r is drawn with weight 1 / r^s,
 * so a few tenants get much of the traffic (with s = 1.1 over 1,000 tenants the first takes about 18%, the first three about 32%).
 */
export function zipf(count: number, s: number, prefix: string): { pick(): string; top(n: number): string[] } {
  const cumulative: number[] = [];
  let total = 0;
  for (let rank = 1; rank <= count; rank++) {
    total += 1 / rank ** s;
    cumulative.push(total);
  }
  return {
    pick() {
      const x = Math.random() * total;
      let lo = 0;
      let hi = count - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cumulative[mid]! < x) lo = mid + 1;
        else hi = mid;
      }
      return `${prefix}${lo + 1}`;
    },
    top: (n) => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`),
  };
}
