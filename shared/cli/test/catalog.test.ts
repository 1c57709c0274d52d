/** The catalog's rules, checked on the real catalog and on broken samples (so the check can fail). */
import { describe, expect, it } from 'vitest';
import { coverage, readCatalog, searchCatalog, validateCatalog, type Catalog } from '../src/catalog.ts';
import { repo } from './helpers.ts';

const sample = (questions: Catalog['questions']): Catalog => ({ topics: { http: 'HTTP' }, questions });

describe('the question catalog', () => {
  it('is valid: unique ids, known topics, exactly one of lab / plannedLab / answer', () => {
    const catalog = readCatalog(repo);
    expect(validateCatalog(catalog)).toEqual([]);
    expect(catalog.questions.length).toBeGreaterThan(100);
  });

  it('catches duplicates, missing answers and two kinds of answer at once', () => {
    const problems = validateCatalog(
      sample([
        {
          id: 'http-01',
          topic: 'http',
          difficulty: 'easy',
          question: 'What does GET do?',
          answer: 'It reads a resource without side effects.',
        },
        {
          id: 'http-01',
          topic: 'http',
          difficulty: 'easy',
          question: 'What does GET do?',
          lab: 'x',
          answer: 'It reads a resource, again.',
        },
        { id: 'http-03', topic: 'nope', difficulty: 'extreme' as 'easy', question: 'What does PUT do?' },
      ]),
    );
    expect(problems.join('\n')).toMatch(/used twice/);
    expect(problems.join('\n')).toMatch(/same question as http-01/);
    expect(problems.join('\n')).toMatch(/exactly one of lab, plannedLab, answer/);
    expect(problems.join('\n')).toMatch(/unknown topic/);
    expect(problems.join('\n')).toMatch(/difficulty/);
  });

  it('counts coverage only for labs that exist', () => {
    const catalog = sample([
      { id: 'http-01', topic: 'http', difficulty: 'easy', question: 'First question here?', lab: 'here' },
      { id: 'http-02', topic: 'http', difficulty: 'easy', question: 'Second question here?', lab: 'coming' },
      { id: 'http-03', topic: 'http', difficulty: 'easy', question: 'Third question here?', plannedLab: 'later' },
    ]);
    expect(coverage(catalog, ['here'])).toMatchObject({ runnable: 1, total: 3, comingLabs: { coming: 1 }, planned: 1 });
    expect(coverage(catalog, ['here', 'coming']).runnable).toBe(2);
  });

  it('search matches word forms and falls back to the answers', () => {
    const catalog = sample([
      {
        id: 'http-01',
        topic: 'http',
        difficulty: 'easy',
        question: 'Why use caching at all?',
        answer: 'Because reading memory beats a database round trip.',
      },
      {
        id: 'http-02',
        topic: 'http',
        difficulty: 'easy',
        question: 'What is a header for?',
        answer: 'Metadata such as the cache rules of a response.',
      },
    ]);
    expect(searchCatalog(catalog, 'cache').map((q) => q.id)).toEqual(['http-01']);
    expect(searchCatalog(catalog, 'metadata').map((q) => q.id)).toEqual(['http-02']);
  });
});
