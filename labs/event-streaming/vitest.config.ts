import { defineLabConfig } from '@labs/test-kit/vitest';

export default defineLabConfig(import.meta.dirname);
