import { defineConfig } from 'vitest/config';

// Tests use real sockets and start real processes (the proxy process, headless Chromium): give each a
// generous bound, so a busy machine is slow, never failed.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
