import { describe, expect, it } from 'vitest';
import { inRounds, type LoadResult, mergeRounds, pairedRatio } from '../src/index.ts';

const result = (rps: number, p50Ms: number, p99Ms: number, statusCounts: Record<string, number>): LoadResult => {
  const requests = Object.values(statusCounts).reduce((a, b) => a + b, 0);
  return {
    name: 'x',
    requests,
    rps,
    p50Ms,
    p99Ms,
    errors: 0,
    statusCounts,
    durationSec: requests / rps,
    loadGeneratorBusy: 0.5,
  };
};

describe('measuring in rounds', () => {
  it('takes turns: every target measured once before any target is measured again', async () => {
    const order: string[] = [];
    const rounds = await inRounds(['a', 'b', 'c'], 2, async (name, round) => {
      order.push(`${name}${round}`);
      return `${name}${round}`;
    });
    expect(order).toEqual(['a0', 'b0', 'c0', 'a1', 'b1', 'c1']);
    expect(rounds.get('b')).toEqual(['b0', 'b1']);
  });

  it('merges rounds into one result: counts and time summed, the median p50, the worst p99', () => {
    const merged = mergeRounds('solution', [
      result(1000, 1, 5, { '200': 100, '429': 900 }), // 1 s
      result(500, 3, 9, { '429': 1000 }), // 2 s
      result(1000, 2, 4, { '200': 1000 }), // 1 s
    ]);
    expect(merged).toMatchObject({
      name: 'solution',
      requests: 3000,
      statusCounts: { '200': 1100, '429': 1900 },
      durationSec: 4,
      rps: 750,
      p50Ms: 2,
      p99Ms: 9,
    });
  });

  it('compares two targets round by round, and takes the median ratio', () => {
    const rounds = (...rps: number[]) => rps.map((r) => result(r, 1, 2, { '200': r }));
    const { median, each } = pairedRatio(rounds(90, 50, 100, 95, 80), rounds(100, 100, 100, 100, 100));
    expect(each).toEqual([0.9, 0.5, 1, 0.95, 0.8]);
    expect(median).toBe(0.9); // the slow second round does not drag it down
    expect(pairedRatio(rounds(1, 3), rounds(1, 1)).median).toBe(2);
    expect(() => pairedRatio(rounds(1), rounds(1, 1))).toThrow(/1 rounds against 2/);
    // Rounds of a figure that is not a rate (a pause in ms): the numbers themselves are paired.
    expect(pairedRatio([300, 6000, 250], [6000, 6000, 5000])).toEqual({ median: 0.05, each: [0.05, 1, 0.05] });
  });
});
