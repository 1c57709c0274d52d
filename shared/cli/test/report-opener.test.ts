/** `bench --open` on each platform the README names: the command that opens the report, or none. */
import { describe, expect, it } from 'vitest';
import { type Desktop, reportOpener } from '../src/commands/serve.ts';

const file = '/home/me/labs/rate-limiter/load/results/rate-limiter.html';
const desktop = (over: Partial<Desktop>): Desktop => ({
  platform: 'linux',
  env: {},
  wsl: false,
  onPath: () => false,
  ...over,
});

describe('reportOpener', () => {
  it('macOS: open', () => expect(reportOpener(file, desktop({ platform: 'darwin' }))).toEqual(['open', file]));

  it('a Linux desktop: xdg-open; a Linux server or CI: none (the path is printed)', () => {
    expect(reportOpener(file, desktop({ env: { DISPLAY: ':0' } }))).toEqual(['xdg-open', file]);
    expect(reportOpener(file, desktop({ env: { WAYLAND_DISPLAY: 'wayland-0' } }))).toEqual(['xdg-open', file]);
    expect(reportOpener(file, desktop({}))).toBeUndefined();
  });

  it("WSL 2: wslview where wslu is installed, else Windows' explorer.exe with the Windows path", () => {
    const wslu = reportOpener(file, desktop({ wsl: true, onPath: (n) => n === 'wslview' }));
    expect(wslu).toEqual(['wslview', file]);
    const explorer = reportOpener(file, desktop({ wsl: true, onPath: (n) => n !== 'wslview' }));
    expect(explorer?.join(' ')).toContain('explorer.exe "$(wslpath -w "$1")"');
    expect(explorer?.at(-1)).toBe(file);
    expect(reportOpener(file, desktop({ wsl: true }))).toBeUndefined();
  });

  it('Windows: start', () =>
    expect(reportOpener(file, desktop({ platform: 'win32' }))?.slice(0, 3)).toEqual(['cmd', '/c', 'start']));
});
