/**
 * `pnpm lab serve n-plus-one [--solution] [--port N]`: seeds the dataset and serves the API on a real
 * port, for curl. Config: PORT (default 3000). Each request logs how many SQL statements it sent.
 */
import { performance } from 'node:perf_hooks';
import type { Express } from 'express';
import { resolveService, stopServices } from '@labs/services';
import { countQueries, listen, untilInterrupted } from '@labs/test-kit';
import { createApp } from './app.ts';
import { DEFAULT_SEED, openLabDatabase, seed } from './database.ts';

const which = process.execArgv.some((a) => a.includes('lab-solution'))
  ? 'reference solution'
  : 'your starter (src/author-feed.ts)';

async function main() {
  const port = Number(process.env.PORT ?? 3000);
  const { url } = await resolveService('postgres');
  const db = await openLabDatabase(url);
  try {
    // The port is taken first and the data seeded after, so a second `serve` on a busy port stops with
    // a message instead of reseeding (dropping) the tables the first one is serving from.
    let app: Express | undefined;
    await using server = await listen((req, res) => {
      if (app) return app(req, res);
      res
        .writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
        .end('{"error":"Seeding the dataset, try again in a second"}');
    }, port);

    const started = performance.now();
    await seed(db, DEFAULT_SEED);
    console.log(
      `Seeded ${DEFAULT_SEED.authors} authors and their posts in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    // The same counter the spec uses, so the log shows what the tests assert.
    const queries = countQueries(db);
    app = createApp({ db });
    server.server.on('request', (req, res) => {
      if (!req.url?.startsWith('/api/')) return;
      const before = queries.count;
      res.once('finish', () => {
        // Concurrent requests share the counter, so under load this is approximate; one curl at a time is exact.
        const sent = queries.count - before;
        console.log(`${req.method} ${req.url} -> ${res.statusCode}, ${sent} SQL ${sent === 1 ? 'query' : 'queries'}`);
      });
    });

    console.log(`N+1 lab (${which}) listening on ${server.url}`);
    console.log(`Try:   curl -s '${server.url}/api/authors?limit=3'`);
    console.log(`Next:  curl -s '${server.url}/api/authors?limit=3&after=3'`);
    console.log('Stop:  Ctrl-C');
    await untilInterrupted();
  } finally {
    await db.end();
    await stopServices(); // an embedded or binary Postgres this process started
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
