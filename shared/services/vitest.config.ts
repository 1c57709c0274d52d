import { defineConfig } from 'vitest/config';

// Tests start real servers (PGlite, redis-server, rabbitmq-server): give each the bound the resolver
// itself gives a provider, so a busy machine is slow, never failed.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
