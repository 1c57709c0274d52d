#!/usr/bin/env node
// Node runs the TypeScript command line as it is (type stripping): no build step, no loader. An older
// Node cannot even load it, so the one version rule (.nvmrc) is checked here, in plain JavaScript.
import { readFileSync } from 'node:fs';

const wanted = Number(
  readFileSync(new URL('../../../.nvmrc', import.meta.url), 'utf8')
    .trim()
    .replace(/^v/, ''),
);
if (Number(process.versions.node.split('.')[0]) < wanted) {
  console.error(
    `This is Node ${process.versions.node}; the labs need Node ${wanted} (.nvmrc). Install it (nvm install ${wanted}), or run ./lab, which sets it up inside this folder.`,
  );
  process.exit(1);
}
await import('../src/main.ts');
