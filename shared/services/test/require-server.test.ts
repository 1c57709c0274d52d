/**
 * requireServer: a lab that needs a server refuses the embedded engine with a message that says why
 * and how to start one, and lets every server through.
 */
import { describe, expect, it } from 'vitest';
import { type ProviderName, requireServer, ServiceUnavailableError } from '../src/index.ts';

/** What the resolver hands out, as far as requireServer reads it. */
const found = (provider: ProviderName) => ({ kind: 'postgres', provider }) as const;

describe('requireServer', () => {
  it('refuses the embedded engine, saying why and how to get a server', () => {
    const refuse = () => requireServer(found('embedded'), 'The consumers run in several processes.');
    expect(refuse).toThrow(ServiceUnavailableError);
    expect(refuse).toThrow(
      'The consumers run in several processes. The embedded PostgreSQL serves one session at a time and cannot. ' +
        'Start a server: docker compose up -d --wait postgres',
    );
  });

  it('lets a server through, whoever provides it', () => {
    for (const provider of ['env', 'local-port', 'container', 'binary'] as ProviderName[]) {
      expect(() => requireServer(found(provider), 'why')).not.toThrow();
    }
  });
});
