import { SERVICES } from '../kinds.ts';
import { probe } from '../probe.ts';
import { service, skip, type Provider } from './types.ts';

/** Step 2: the port docker-compose.yml publishes, if a server of the right protocol answers there. */
export const fromLocalPort: Provider = async (kind) => {
  const { defaultPort, defaultUrl } = SERVICES[kind];
  if (!(await probe(kind, '127.0.0.1', defaultPort, 1000))) return skip(`nothing answers on 127.0.0.1:${defaultPort}`);
  // defaultUrl carries the compose file's credentials (postgres/postgres, guest/guest); a local server
  // with trust auth ignores the password, so one URL serves both.
  return {
    ok: true,
    service: service(kind, 'local-port', defaultUrl, `127.0.0.1:${defaultPort} (docker compose or a local server)`),
  };
};
