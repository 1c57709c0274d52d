/**
 * Step 5: an embedded engine, only where it is the real engine. PGlite is PostgreSQL compiled to
 * WebAssembly; served over the wire protocol by pglite-socket, labs reach it with `pg` unchanged.
 */
import { service, skip, type Provider } from './types.ts';

/** How many client connections the PGlite socket server multiplexes onto its single session. */
const PGLITE_MAX_CONNECTIONS = 20;

export const fromEmbedded: Provider = async (kind) => {
  if (kind !== 'postgres') return skip(`there is no embedded engine for ${kind} that is the real thing`);
  const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite-socket'),
  ]);
  const db = await PGlite.create();
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: PGLITE_MAX_CONNECTIONS });
  await server.start();
  const address = server.getServerConn(); // "127.0.0.1:PORT"
  const url = `postgres://postgres@${address}/postgres?sslmode=disable`;
  return {
    ok: true,
    service: service('postgres', 'embedded', url, `embedded PGlite on ${address} (in this process)`, async () => {
      await server.stop();
      await db.close();
    }),
  };
};
