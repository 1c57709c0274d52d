/** Credentials as input (a bearer header, a configured secret) and failures outside a request. */
import { describe, expect, it } from 'vitest';
import { isRedisOutage } from '@labs/services';
import { z } from 'zod';
import { bearerToken, loginInput, secretSetting } from '../src/credentials.ts';
import { failureReporter } from '../src/failures.ts';
import { ConfigError, readConfig } from '../src/input.ts';

describe('loginInput', () => {
  const schema = loginInput();

  it('trims the username, keeps the password as sent', () => {
    expect(schema.parse({ username: ' ada ', password: ' pass phrase ' })).toEqual({
      username: 'ada',
      password: ' pass phrase ',
    });
  });

  it('names each field that is missing, empty, not text or too long; says what to send for anything else', () => {
    const issues = (value: unknown) =>
      schema.safeParse(value).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(issues({ username: '  ', password: 7 })).toEqual([
      'username: must be a non-empty string',
      'password: must be a non-empty string',
    ]);
    expect(issues({ username: 'u'.repeat(65), password: 'p'.repeat(1025) })).toEqual([
      'username: must be at most 64 characters',
      'password: must be at most 1024 characters',
    ]);
    expect(issues(undefined)?.[0]).toMatch(/^: Send a JSON object/);
  });
});

describe('bearerToken', () => {
  const schema = bearerToken();

  it('reads the token of "Bearer <token>", in any case of the scheme; absent or empty is undefined', () => {
    expect(schema.parse('Bearer abc.DEF-_~+/9==')).toBe('abc.DEF-_~+/9==');
    expect(schema.parse('bearer xyz')).toBe('xyz');
    expect(schema.parse(undefined)).toBeUndefined();
    expect(schema.parse('')).toBeUndefined();
  });

  it('refuses another scheme, a missing token, a space or padding inside it', () => {
    for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'Bearer a=b', 'abc']) {
      const result = schema.safeParse(header);
      expect(result.success, header).toBe(false);
      expect(result.error?.issues[0]?.message).toBe('must be "Bearer <token>"');
    }
  });
});

describe('secretSetting', () => {
  const long = 'x'.repeat(32);

  it('keeps a long enough secret, names the variable and the rule for a short one', () => {
    const schema = z.object({ SECRET: secretSetting() });
    expect(readConfig(schema, { SECRET: long })).toEqual({ SECRET: long });
    expect(() => readConfig(schema, { SECRET: 'hunter2' })).toThrow(ConfigError);
    expect(() => readConfig(schema, { SECRET: 'hunter2' })).toThrow(/SECRET: must be at least 32 characters/);
    expect(() => readConfig(z.object({ S: secretSetting({ minLength: 8 }) }), { S: 'hunter2' })).toThrow(/at least 8/);
  });

  it('absent or empty: undefined, or a random one per process with randomIfUnset', () => {
    expect(readConfig(z.object({ S: secretSetting() }), { S: '' }).S).toBeUndefined();
    const random = z.object({ S: secretSetting({ randomIfUnset: true }) });
    const first = readConfig(random, {}).S;
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(readConfig(random, { S: '' }).S).not.toBe(first);
  });
});

describe('failureReporter', () => {
  const outage = () => new Error('Connection is closed.'); // what ioredis says when Redis is gone
  const outages = [{ test: isRedisOutage, service: 'Redis' }];

  it('sorts an outage from a bug: the outage named, at most a line every 5 s; every bug with its stack', () => {
    const lines: string[] = [];
    const report = failureReporter({ outages, log: (line) => lines.push(line) });
    expect(report('send failed', outage())).toBe(outages[0]);
    expect(report('send failed', outage())).toBe(outages[0]);
    expect(report('join failed', new TypeError('members is undefined'))).toBeUndefined();
    expect(report('join failed', new TypeError('members is undefined'))).toBeUndefined();
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe('send failed: Redis is not answering: Connection is closed.');
    expect(lines[1]).toMatch(/^join failed: TypeError: members is undefined\n\s+at /);
  });
});
