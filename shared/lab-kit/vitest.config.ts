import { defineConfig } from 'vitest/config';

// Tests use real servers, found (or started) by the resolver: give each the bound the resolver itself
// gives a provider, so a busy machine is slow, never failed.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
