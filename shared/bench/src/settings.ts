/**
 * Settings a learner may pass to a load script through the environment. A value that makes no sense
 * stops the script at once with a message, before any server starts: a benchmark run with a NaN
 * duration would measure something else and say nothing.
 */

/**
 * Seconds each target is measured: `BENCH_DURATION_SEC` when set (a whole number from 1 to 600), else
 * `defaultSec`. Exits with code 2 and a message when the variable is set to anything else.
 */
export function benchDurationSec(defaultSec: number): number {
  const raw = process.env.BENCH_DURATION_SEC;
  if (raw === undefined || raw === '') return defaultSec;
  const seconds = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || seconds < 1 || seconds > 600) {
    console.error(`BENCH_DURATION_SEC must be a whole number of seconds from 1 to 600, got "${raw}".`);
    process.exit(2);
  }
  return seconds;
}
