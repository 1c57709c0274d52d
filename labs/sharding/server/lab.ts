/**
 * The lab, described once: `lab serve`, the spec and the load script all start it from here. Add the
 * services it needs (['redis'], ['postgres'], ...) and take them from `context` (context.redis(),
 * context.database()): the kit names, creates and removes them per use.
 */
import express from 'express';
import { countWords } from '#exercise';
import { defineLab, notFound, parseInput, problemHandler, z } from '@labs/lab-kit';

/** What a spec or load script may set instead of the default (here: which implementation counts). */
export interface LabOptions {
  countWords: (text: string) => number;
}

/** The query string GET /api/words accepts. */
const wordsQuery = z.object({ text: z.string().max(10_000) });

export default defineLab<Record<string, never>, LabOptions>({
  slug: 'sharding',
  title: 'Sharding',
  services: [],
  build(_context, options) {
    const count = options.countWords ?? countWords;
    const app = express();
    app.disable('x-powered-by');
    app.get('/api/words', (req, res) => {
      const query = parseInput(res, wordsQuery, req.query);
      if (!query) return;
      res.json({ words: count(query.text) });
    });
    app.use(notFound);
    app.use(problemHandler());
    return { app, usage: (url) => [`Try:   curl -s '${url}/api/words?text=hello%20%20world'`] };
  },
});
