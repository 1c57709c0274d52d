#!/usr/bin/env node
// Launches the TypeScript command line through tsx's loader, so `lab` needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
