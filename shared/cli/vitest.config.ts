import { defineConfig } from 'vitest/config';

// The tests spawn the command line as a learner runs it; one of them runs a lab's spec.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
