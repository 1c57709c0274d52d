/** The servers the load script measures, in their own process (forkServers): starter and solution. */
import { openLab } from '@labs/lab-kit';
import { countWords as solution } from '../solution/exercise.ts';
import lab from '../server/lab.ts';
import { countWords as starter } from '../src/exercise.ts';

export async function start() {
  const opened = await openLab(lab, { purpose: 'bench' });
  const urls: Record<string, string> = {};
  for (const [name, countWords] of Object.entries({ starter, solution })) {
    const { app } = await lab.build(opened.context, { countWords });
    urls[name] = (await opened.context.listen(app)).url;
  }
  return { urls, close: () => opened.close() };
}
