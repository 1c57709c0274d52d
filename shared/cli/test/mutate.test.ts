/**
 * `lab mutate`: what it makes of Stryker's report (the score, each survivor as file:line), and that a
 * wrong lab name is a clear message, not a stack trace. The mutation run itself is minutes of CPU; it
 * is run by hand (CONTRIBUTING.md, Mutation testing), never by the test suite.
 */
import { describe, expect, it } from 'vitest';
import { describeSummary, MUTATION_GOAL, strykerConfig, summarise } from '../src/commands/mutate.ts';
import { hasStackTrace, lab } from './helpers.ts';

const source = ['export function allowed(count: number, limit: number) {', '  return count < limit;', '}', ''].join(
  '\n',
);
const at = (line: number, from: number, to: number) => ({
  start: { line, column: from },
  end: { line, column: to },
});
const report = {
  files: {
    'solution/limit.ts': {
      source,
      mutants: [
        { mutatorName: 'EqualityOperator', replacement: 'count <= limit', status: 'Survived', location: at(2, 10, 23) },
        { mutatorName: 'BooleanLiteral', replacement: 'true', status: 'Killed', location: at(2, 10, 23) },
        {
          mutatorName: 'BlockStatement',
          replacement: '{}',
          status: 'NoCoverage',
          location: { start: { line: 1, column: 55 }, end: { line: 3, column: 2 } },
        },
        { mutatorName: 'ConditionalExpression', replacement: 'false', status: 'Timeout', location: at(2, 10, 23) },
        { mutatorName: 'StringLiteral', replacement: '""', status: 'Ignored', location: at(2, 10, 23) },
        { mutatorName: 'ArithmeticOperator', replacement: 'count', status: 'RuntimeError', location: at(2, 10, 23) },
      ],
    },
  },
} as const;

describe('lab mutate', () => {
  it('scores killed and timed-out mutants over those judged, and lists every survivor with file:line', () => {
    const summary = summarise(structuredClone(report) as never, '/lab');
    expect(summary).toMatchObject({ mutants: 6, killed: 2, survived: 1, noCoverage: 1, ignored: 1, invalid: 1 });
    expect(summary.score).toBe(50);
    expect(summary.survivors.map((s) => `${s.where} ${s.mutator}: ${s.change}`)).toEqual([
      'solution/limit.ts:1:55 BlockStatement: { return count < limit; } → {}',
      'solution/limit.ts:2:10 EqualityOperator: count < limit → count <= limit',
    ]);
    const lines = describeSummary('limit', summary, 1.5);
    expect(lines[0]).toBe(`limit: mutation score 50% (2 of 4 mutants killed; goal ${MUTATION_GOAL}%)`);
    expect(lines).toContain(
      '  solution/limit.ts:1:55  BlockStatement (no test reaches it): { return count < limit; } → {}',
    );
  });

  it("mutates the solution twin of each exercise file, one runner, per-test coverage, incremental in the lab's test/", () => {
    const config = strykerConfig({ slug: 'x', dir: '/x', lab: { exercise: ['src/a.ts', 'src/b.ts'] } } as never);
    expect(config).toMatchObject({
      mutate: ['solution/a.ts', 'solution/b.ts'],
      concurrency: 1,
      coverageAnalysis: 'perTest',
      incremental: true,
      incrementalFile: 'test/mutation/stryker-incremental.json',
      testRunner: 'vitest',
    });
  });

  it('names a lab that does not exist, with no stack trace', async () => {
    const r = await lab(['mutate', 'rate-limitr']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/There is no lab called "rate-limitr"\. Did you mean .*rate-limiter/);
    expect(hasStackTrace(r.stderr)).toBe(false);
    const none = await lab(['mutate']);
    expect(none.stderr).toMatch(/Which lab\? Usage: .* mutate <lab>/);
  });
});
