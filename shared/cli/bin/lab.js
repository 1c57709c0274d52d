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
// kafkajs 2.2.4, the labs' Kafka client (unmaintained since 2023), arms a timer Node finds negative and
// warns about it on every connection: noise about the client, not about the learner's code. Ours is
// silenced here, our children's (specs, servers, load scripts) through NODE_OPTIONS.
process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --disable-warning=TimeoutNegativeWarning`.trim();
const printWarning = process.listeners('warning');
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name !== 'TimeoutNegativeWarning') for (const listener of printWarning) listener(warning);
});
await import('../src/main.ts');
