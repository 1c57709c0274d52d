/** Signed tokens: what verifies, and every way one that should not is refused. */
import { describe, expect, it } from 'vitest';
import { decodeSignedToken, issueSignedToken, SIGNED_TOKEN_TTL_SEC, verifySignedToken } from '../src/signed-token.ts';

const SECRET = 'a secret of at least thirty-two characters';

describe('signed tokens', () => {
  it('verify with the secret they were signed with, until they expire', () => {
    const now = 1_800_000_000_000;
    const token = issueSignedToken(SECRET, 'ada', { now });
    expect(verifySignedToken(SECRET, token, now)).toEqual({ ok: true, subject: 'ada' });
    const lastMoment = now + SIGNED_TOKEN_TTL_SEC * 1000 - 1;
    expect(verifySignedToken(SECRET, token, lastMoment)).toEqual({ ok: true, subject: 'ada' });
    expect(verifySignedToken(SECRET, token, lastMoment + 1)).toEqual({ ok: false, reason: 'the token has expired' });
    const short = issueSignedToken(SECRET, 'ada', { now, ttlSec: 5 });
    expect(verifySignedToken(SECRET, short, now + 5000).ok).toBe(false);
  });

  it('refuse another secret, an edited payload, a truncated signature and what is not a token', () => {
    const token = issueSignedToken(SECRET, 'ada');
    const [, signature] = token.split('.');
    const forged = `${Buffer.from(JSON.stringify({ sub: 'admin', exp: 4_000_000_000 })).toString('base64url')}.${signature}`;
    const mismatch = { ok: false, reason: 'the token signature does not match' };
    expect(verifySignedToken('another secret, just as long as the first', token)).toEqual(mismatch);
    expect(verifySignedToken(SECRET, forged)).toEqual(mismatch);
    expect(verifySignedToken(SECRET, token.slice(0, -1))).toEqual(mismatch);
    for (const junk of ['', 'abc', 'a.b.c', `${token}.x`]) {
      expect(verifySignedToken(SECRET, junk).ok, junk).toBe(false);
    }
    const notJson = `${Buffer.from('not json').toString('base64url')}`;
    const signedJunk = issueSignedToken(SECRET, 'x').replace(/^[^.]+/, notJson);
    expect(verifySignedToken(SECRET, signedJunk).ok).toBe(false);
  });

  it('decode without verifying, which any forger can make say anything', () => {
    expect(decodeSignedToken(issueSignedToken(SECRET, 'ada'))).toBe('ada');
    expect(decodeSignedToken(`${Buffer.from('{"sub":"admin","exp":1}').toString('base64url')}.whatever`)).toBe('admin');
    expect(decodeSignedToken('garbage')).toBeUndefined();
  });
});
