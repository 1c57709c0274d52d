/**
 * The API under test: GET and PUT /users/:id over any UserCache. createApp never listens; tests and the
 * load script start it on port 0, src/main.ts on a real port. The learner does not edit this file.
 */
import express, { type ErrorRequestHandler, type Express } from 'express';
import type { Lookup, UserCache } from './cache.ts';
import { parseUserId, parseUserInput } from './users.ts';

export interface AppDeps {
  cache: UserCache;
  /** Sent as X-Instance, so a learner can see which instance answered. */
  instance?: string;
  /** Called after every read (the load script counts cache hits with it). */
  onLookup?: (lookup: Lookup) => void;
  /** Called with any unexpected error (the response is then a 500). */
  onError?: (error: Error) => void;
}

export function createApp(deps: AppDeps): Express {
  const { cache, instance = 'app', onLookup = () => {}, onError = (e) => console.error(e) } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag'); // an ETag would turn repeated reads into 304s and hide what the cache did
  app.use(express.json({ limit: '10kb' }));
  app.use((_req, res, next) => {
    res.set('X-Instance', instance);
    next();
  });

  app.get('/health', (_req, res) => {
    res.json({ ok: true, instance });
  });

  app.get('/users/:id', async (req, res, next) => {
    const parsed = parseUserId(req.params.id);
    if ('error' in parsed) {
      res.status(400).json({ error: parsed.error });
      return;
    }
    try {
      const lookup = await cache.get(parsed.id);
      onLookup(lookup);
      res.set('X-Cache', lookup.source === 'cache' ? 'hit' : 'miss');
      if (lookup.user === null) {
        res.status(404).json({ error: `no user with id ${parsed.id}` });
        return;
      }
      res.json(lookup.user);
    } catch (error) {
      next(error);
    }
  });

  app.put('/users/:id', async (req, res, next) => {
    const parsed = parseUserId(req.params.id);
    if ('error' in parsed) {
      res.status(400).json({ error: parsed.error });
      return;
    }
    const body = parseUserInput(req.body);
    if ('error' in body) {
      res.status(400).json({ error: body.error });
      return;
    }
    try {
      const { user, created } = await cache.put(parsed.id, body.input);
      res.status(created ? 201 : 200).json(user);
    } catch (error) {
      next(error);
    }
  });

  app.use((req, res) => {
    res.status(404).json({ error: `no route ${req.method} ${req.path.slice(0, 100)}: try GET or PUT /users/:id` });
  });

  const handleError: ErrorRequestHandler = (error: Error & { type?: string; status?: number }, _req, res, _next) => {
    if (error.type === 'entity.parse.failed') {
      res.status(400).json({ error: 'body must be valid JSON' });
      return;
    }
    if (error.type === 'entity.too.large') {
      res.status(413).json({ error: 'body must be at most 10 kB' });
      return;
    }
    // Other client errors Express and its body parser raise: a URL that is not valid percent-encoding
    // (400), a charset or Content-Encoding it cannot read (415). Their messages say what was wrong.
    if (error.status !== undefined && error.status >= 400 && error.status < 500) {
      res.status(error.status).json({ error: error.message });
      return;
    }
    onError(error);
    res.status(500).json({ error: 'internal error' });
  };
  app.use(handleError);
  return app;
}
