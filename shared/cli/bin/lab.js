#!/usr/bin/env node
// Node runs the TypeScript command line as it is (type stripping): no build step, no loader. An older
// Node cannot even load it, so the one version rule (.nvmrc) is checked here, in plain JavaScript.
import { readFileSync } from 'node:fs';
import nodeModule from 'node:module';
import { fileURLToPath } from 'node:url';

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
// V8 keeps the code it compiled for each module in node_modules/.cache: this command and every process
// it starts (turbo's tasks, each spec run's vitest fork, servers) load express, ioredis, pg and the rest
// without compiling them again. A whole `./lab test` starts about 180 vitest forks; measured, a lab's
// check spends about 5% less CPU with the cache warm.
process.env.NODE_COMPILE_CACHE ??= fileURLToPath(
  new URL('../../../node_modules/.cache/labs/node-compile', import.meta.url),
);
nodeModule.enableCompileCache(process.env.NODE_COMPILE_CACHE);
await import('../src/main.ts');
