import { defineConfig } from 'vitest/config';

// The tests spawn the command line as a learner runs it; some run a lab's spec or a whole check. No test
// times anything: each waits for what it expects to see (a line printed, a process gone), so these
// timeouts only stop a hang, and are set for a busy two-core machine, not a quiet one.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 120_000,
  },
});
