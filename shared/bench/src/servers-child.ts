/** The child side of forkServers: loads the lab's servers module and answers the parent over IPC. */
import { pathToFileURL } from 'node:url';
import type { ServersHandle } from './servers.ts';

const modulePath = process.argv[2];
if (!modulePath || !process.send) throw new Error('servers-child.ts is started by forkServers()');
const send = (message: unknown) => process.send?.(message);
let handle: ServersHandle | undefined;

process.on('message', async (m: { type: string; options?: unknown; id?: number }) => {
  try {
    if (m.type === 'start') {
      const mod = (await import(pathToFileURL(modulePath).href)) as { start(options: unknown): Promise<ServersHandle> };
      handle = await mod.start(m.options);
      send({ type: 'ready', urls: handle.urls });
    } else if (m.type === 'stats') {
      send({ type: 'stats', id: m.id, stats: (await handle?.stats?.()) ?? {} });
    } else if (m.type === 'close') {
      await handle?.close();
      process.exit(0);
    }
  } catch (error) {
    send({ type: 'error', message: (error as Error).message });
    process.exit(1);
  }
});
// The load script stops this process over IPC when it is done. Killed outright (kill -9, a CI job's
// timeout), it never will: the channel closes and nobody is left to ask. Close then, quietly, within a
// few seconds, rather than serve on alone and fail noisily once the services it used go away too.
process.once('disconnect', () => {
  setTimeout(() => process.exit(0), 3000).unref();
  void (handle?.close() ?? Promise.resolve()).catch(() => undefined).finally(() => process.exit(0));
});
// Ctrl-C reaches the whole process group; close cleanly instead of dying mid-write.
process.on('SIGINT', () => {});
process.on('SIGTERM', async () => {
  await handle?.close().catch(() => undefined);
  process.exit(0);
});
