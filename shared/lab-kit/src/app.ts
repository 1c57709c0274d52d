/**
 * The frame of every lab's Express app, so a lab writes its routes and nothing around them: no
 * `X-Powered-By`, the JSON body parser when the API takes bodies, `GET /health`, and at the end the
 * 404 problem and the problem handler (4xx for body-parser mistakes, 503 for an outage, 500 for a bug).
 */
import express, { type Express } from 'express';
import { notFound, type ProblemHandlerOptions, problemHandler } from './problem.ts';

/** How {@link labApp} frames a lab's routes; the problem handler's options besides. */
export interface LabAppOptions extends ProblemHandlerOptions {
  /** The lab's name in its log lines, `[name] ...`: the default `log` and `logOutage` print it. */
  name: string;
  /** express.json()'s options (a `limit`, always): the API takes JSON bodies. Absent: none is parsed. */
  json?: Parameters<typeof express.json>[0];
}

/**
 * An app with `routes` in its frame. `GET /health` answers `{ ok: true }` after the lab's routes, so a
 * lab's own middleware applies to it too, and a lab that answers `/health` itself overrides it.
 * Liveness only: it stays 200 while a service is away, since restarting the process brings none back.
 */
export function labApp(options: LabAppOptions, routes: (app: Express) => void): Express {
  const { name, json, outages, log, logOutage } = options;
  const app = express();
  app.disable('x-powered-by');
  if (json) app.use(express.json(json));
  routes(app);
  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });
  app.use(notFound);
  app.use(
    problemHandler({
      outages,
      log: log ?? ((error) => console.error(`[${name}] ${error.message}`)),
      logOutage: logOutage ?? ((line) => console.warn(`[${name}] ${line}`)),
    }),
  );
  return app;
}
