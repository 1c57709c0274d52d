/** A message read as JSON and checked by a schema. */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { readJsonMessage } from '../src/message.ts';

const order = z.object({ id: z.string().min(1), qty: z.number().int().positive() });

describe('readJsonMessage', () => {
  it('gives the value of JSON the schema accepts', () => {
    expect(readJsonMessage('{"id":"a","qty":2}', order)).toEqual({ ok: true, value: { id: 'a', qty: 2 } });
  });

  it('tells text that is not JSON from JSON of the wrong shape, and says which field', () => {
    const notJson = readJsonMessage('{"id": oops', order);
    expect(notJson).toMatchObject({ ok: false, notJson: true, issues: [] });
    expect(!notJson.ok && notJson.detail).toBe('not valid JSON: "{\\"id\\": oops"');
    const wrong = readJsonMessage('{"id":"","qty":-1}', order);
    expect(wrong).toMatchObject({ ok: false, notJson: false });
    expect(!wrong.ok && wrong.issues.map((issue) => issue.path.join('.'))).toEqual(['id', 'qty']);
    expect(!wrong.ok && wrong.detail).toMatch(/^id: .+; qty: .+/);
  });
});
