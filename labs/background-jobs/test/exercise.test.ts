/**
 * The spec. Baseline tests hold for the starter and the solution; each `challenge:` test fails on the
 * starter and passes on the solution. Tests count things, never time them.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startLab } from '@labs/lab-kit';
import lab from '../server/lab.ts';

const running = await startLab(lab);
afterAll(() => running.close());

const words = async (text: string) => {
  const res = await fetch(`${running.url}/api/words?text=${encodeURIComponent(text)}`);
  return { status: res.status, body: (await res.json()) as { words?: number; detail?: string } };
};

describe('baseline', () => {
  it('counts the words of a plain sentence', async () => {
    expect(await words('one two three')).toEqual({ status: 200, body: { words: 3 } });
  });

  it('answers 400 with a problem body when text is missing', async () => {
    const res = await fetch(`${running.url}/api/words`);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });
});

describe('challenges', () => {
  it('challenge: runs of spaces and blank text count no extra words', async () => {
    expect((await words('one  two')).body.words, '"one  two" has two words').toBe(2);
    expect((await words('   ')).body.words, 'blank text has none').toBe(0);
  });
});
