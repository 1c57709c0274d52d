/**
 * The manifest as the kit reads it (its rules, the type they give, the slug said once in package.json's
 * name) and defineLab finding its slug there, and inferring its types from what it is given.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, expectTypeOf, it } from 'vitest';
import { type DefinedLab, defineLab, type LabContext, wholeNumber, z } from '../src/index.ts';
import { labDirOf, type LabManifest, readLabPackage } from '../src/manifest.ts';

const root = mkdtempSync(join(tmpdir(), 'kit-manifest-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const GOOD = {
  order: 5,
  title: 'Demo',
  topic: 'a lab for the kit to read',
  difficulty: 'easy',
  services: ['redis'],
  exercise: ['src/demo.ts'],
};

/** A lab folder under the temporary root with this package.json; returns its path. */
function labFolder(name: string, pkg: Record<string, unknown>): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'server'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg));
  return dir;
}

describe('readLabPackage', () => {
  it('takes the slug from the package name and fills in the defaults', () => {
    const lab = readLabPackage(labFolder('good', { name: '@labs/demo-lab', lab: GOOD }));
    expect(lab.slug).toBe('demo-lab');
    expect(lab.lab.hints).toEqual([]);
    expect(lab.lab.invariants).toEqual({ permanentKeys: {}, optOut: {} });
    expectTypeOf(lab.lab).toEqualTypeOf<LabManifest>();
    expectTypeOf(lab.lab.services).toEqualTypeOf<('redis' | 'postgres' | 'rabbitmq' | 'kafka')[]>();
    expectTypeOf(lab.lab.difficulty).toEqualTypeOf<'easy' | 'medium' | 'hard'>();
  });

  it('names the field of a typo', () => {
    const dir = labFolder('typo', { name: '@labs/typo', lab: { ...GOOD, services: ['redsi'], order: 'first' } });
    expect(() => readLabPackage(dir)).toThrow(/order: .*services\.0: must be one of redis/s);
    expect(() => readLabPackage(labFolder('none', { name: '@labs/none' }))).toThrow(/has no "lab" field/);
  });
});

describe('defineLab', () => {
  it('reads the slug from the package its module lives in, when it is not given', async () => {
    const dir = labFolder('unnamed', { name: '@labs/said-once', lab: GOOD });
    const kit = pathToFileURL(join(import.meta.dirname, '..', 'src', 'index.ts')).href;
    writeFileSync(
      join(dir, 'server', 'lab.ts'),
      `import { defineLab } from '${kit}';\nexport default defineLab({ build: () => ({ app: (_q, r) => r.end() }) });\n`,
    );
    const { default: lab } = (await import(pathToFileURL(join(dir, 'server', 'lab.ts')).href)) as {
      default: DefinedLab;
    };
    expect(lab.slug).toBe('said-once');
    expect(labDirOf(join(dir, 'server', 'lab.ts'))).toBe(dir);
  });

  it('keeps a slug that is given', () => {
    expect(defineLab({ slug: 'given', build: () => ({ app: (_q, r) => r.end() }) }).slug).toBe('given');
  });

  it('infers the config from its schema and the options from build', () => {
    interface Options {
      clock: () => number;
    }
    const lab = defineLab({
      slug: 'typed',
      config: z.object({ LIMIT: wholeNumber({ fallback: 1, min: 1, max: 9 }) }),
      build: (context, options: Partial<Options>) => {
        expectTypeOf(context.config.LIMIT).toEqualTypeOf<number>();
        expectTypeOf(options.clock).toEqualTypeOf<(() => number) | undefined>();
        return { app: (_q, r) => r.end() };
      },
    });
    expectTypeOf(lab).toEqualTypeOf<DefinedLab<{ LIMIT: number }, Options>>();
    expectTypeOf<Parameters<typeof lab.build>[0]>().toEqualTypeOf<LabContext<{ LIMIT: number }>>();
  });
});
