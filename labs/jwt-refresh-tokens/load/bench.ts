/**
 * Load script: "session vs token", measured. GET /me four ways, one autocannon run each: the starter's
 * JWT, the solution's JWT, the solution's JWT plus a `jti` deny-list, and a server-side session in
 * Redis. Evidence: Redis commands per request, and, after logging out, whether /me and /refresh still
 * answer 200 with the same credentials (what revocation costs each, measured rather than described).
 * Then POST /login (right password, wrong password, unknown user), to show the price of argon2id per
 * login and that a failed login costs one hash whether or not the user exists.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { hash, verify } from '@node-rs/argon2';
import { benchDurationSec, createReport, forkServers, HTTP, runLoad, type TableRow } from '@labs/bench';
import { DEMO_USERS, PASSWORD_HASH } from '../server/users.ts';

const DURATION_SEC = benchDurationSec(4);
const WARMUP_SEC = 1;
const ME_CONNECTIONS = 32;
const LOGIN_CONNECTIONS = 8;
const [ada] = DEMO_USERS;
const loginBody = JSON.stringify({ username: ada.username, password: ada.password });

console.log(
  `JWT vs session load test: GET /me with ${ME_CONNECTIONS} connections, POST /login with ${LOGIN_CONNECTIONS}, ${DURATION_SEC} s per target (+${WARMUP_SEC} s warm-up for /me).`,
);
// An edited src/ runs as "your code" beside the committed starter (servers.ts): rows say whose code they ran.
const report = createReport({ lab: 'jwt-refresh-tokens', dir: join(import.meta.dirname, '..'), starterBeside: true });
await using servers = await forkServers(new URL('./servers.ts', import.meta.url));

/** What a client holds after logging in: the headers for /me, and the refresh cookie if it got one. */
interface Login {
  headers: Record<string, string>;
  refreshCookie?: string;
}

/** Logs in once: a bearer token (and maybe a refresh cookie), or a session cookie. */
async function credentialsFor(baseUrl: string): Promise<Login> {
  const res = await fetch(`${baseUrl}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: loginBody,
  });
  if (!res.ok) throw new Error(`login at ${baseUrl} answered ${res.status}`);
  const body = (await res.json()) as { accessToken?: string };
  const cookies = res.headers.getSetCookie();
  if (body.accessToken) {
    const refreshCookie = cookies.find((c) => c.startsWith('refresh_token='))?.split(';')[0];
    return { headers: { authorization: `Bearer ${body.accessToken}` }, refreshCookie };
  }
  const sid = cookies.find((c) => c.startsWith('sid='))?.split(';')[0];
  if (!sid) throw new Error(`login at ${baseUrl} returned neither a token nor a session cookie`);
  return { headers: { cookie: sid } };
}

/**
 * Logs out as a browser would (the bearer header or session cookie; the refresh cookie's path keeps it
 * off /logout), then tries the same credentials again: /me, and /refresh with the refresh cookie (or,
 * for a client without one, with what it has). 200 means "still logged in"; the session design has
 * no /refresh at all.
 */
async function statusesAfterLogout(baseUrl: string, login: Login): Promise<{ me: number; refresh: number | string }> {
  const send = async (method: string, path: string, headers: Record<string, string>) => {
    const res = await fetch(`${baseUrl}${path}`, { method, headers });
    await res.arrayBuffer();
    return res.status;
  };
  await send('POST', '/logout', login.headers);
  const me = await send('GET', '/me', login.headers);
  const refresh = await send('POST', '/refresh', login.refreshCookie ? { cookie: login.refreshCookie } : login.headers);
  return { me, refresh: refresh === 404 ? 'no /refresh' : refresh };
}

const meRows: TableRow[] = [];
for (const [name, baseUrl] of Object.entries(servers.urls)) {
  const login = await credentialsFor(baseUrl);
  const { headers } = login;
  // One second unmeasured first, so every target is measured with its code already optimised by the JIT.
  await runLoad({
    name: `${name} (warm-up)`,
    url: `${baseUrl}/me`,
    durationSec: WARMUP_SEC,
    connections: ME_CONNECTIONS,
    headers,
  });
  const before = (await servers.stats())[name] ?? 0;
  const result = await runLoad({
    name,
    url: `${baseUrl}/me`,
    durationSec: DURATION_SEC,
    connections: ME_CONNECTIONS,
    headers,
  });
  const commands = ((await servers.stats())[name] ?? 0) - before;
  const afterLogout = await statusesAfterLogout(baseUrl, login);
  meRows.push(
    HTTP.row(name, result, {
      'Redis cmds/req': Math.round((commands / Math.max(1, result.requests)) * 100) / 100,
      '/me after logout': afterLogout.me,
      '/refresh after logout': afterLogout.refresh,
    }),
  );
}
report.table('GET /me: a stateless JWT check vs a server-side session lookup', {
  columns: [
    ...HTTP.columns,
    { name: 'Redis cmds/req' },
    { name: '/me after logout' },
    { name: '/refresh after logout' },
  ],
  rows: meRows,
  lesson: 'Redis cmds/req',
});

// One argon2id hash, timed alone in this process: the floor of every login's latency.
const sample = await hash(ada.password, PASSWORD_HASH);
const started = performance.now();
for (let i = 0; i < 5; i++) await verify(sample, ada.password);
const hashMs = Math.round(((performance.now() - started) / 5) * 10) / 10;
const params = `argon2id m=${PASSWORD_HASH.memoryCost / 1024} MiB t=${PASSWORD_HASH.timeCost} p=${PASSWORD_HASH.parallelism}`;

const loginRows: TableRow[] = [];
const solutionUrl = servers.urls.solution!;
for (const [name, body] of [
  ['POST /login (right password)', loginBody],
  ['POST /login (wrong password)', JSON.stringify({ username: ada.username, password: 'not the password' })],
  ['POST /login (unknown user)', JSON.stringify({ username: 'nobody', password: 'not the password' })],
] as const) {
  const before = await servers.stats();
  const result = await runLoad({
    name,
    url: `${solutionUrl}/login`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    durationSec: DURATION_SEC,
    connections: LOGIN_CONNECTIONS,
  });
  await new Promise((r) => setTimeout(r, 300)); // let the logins still in flight when autocannon stopped finish
  const after = await servers.stats();
  const hashes = (after['password hashes'] ?? 0) - (before['password hashes'] ?? 0);
  const logins = (after['login requests'] ?? 0) - (before['login requests'] ?? 0);
  loginRows.push(
    HTTP.row(name, result, {
      hash: params,
      'per hash': hashMs,
      'hashes/login': Math.round((hashes / Math.max(1, logins)) * 100) / 100,
      statuses: JSON.stringify(result.statusCounts),
    }),
  );
}
report.table('POST /login: the deliberate cost of a memory-hard password hash', {
  columns: [
    ...HTTP.columns,
    { name: 'hash' },
    { name: 'per hash', unit: 'ms', kind: 'latency' },
    { name: 'hashes/login' },
    { name: 'statuses' },
  ],
  rows: loginRows,
  lesson: 'hashes/login',
});

const meRow = (name: string) => meRows.find((row) => row.name === name);
const [starter, solution, denyList, session] = [
  'starter',
  'solution',
  'solution + jti deny-list',
  'server-side session',
].map(meRow);
const [, wrongPassword, unknownUser] = loginRows;
if (starter && solution && denyList && session && wrongPassword && unknownUser) {
  report.target(
    'solution: Redis commands per GET /me (a signature check asks Redis nothing)',
    Number(solution.values['Redis cmds/req']),
    {
      exactly: 0,
    },
  );
  report.target(
    'session: status of /me after logout (logout takes effect at once)',
    Number(session.values['/me after logout']),
    {
      exactly: 401,
    },
  );
  report.target('deny-list: status of /me after logout', Number(denyList.values['/me after logout']), { exactly: 401 });
  // The stateless trade-off: the access token outlives logout until it expires.
  report.target(
    'solution: status of /me after logout (the access token lives on)',
    Number(solution.values['/me after logout']),
    {
      exactly: 200,
    },
  );
  report.target(
    'solution: status of /refresh after logout (the refresh token ends at once)',
    Number(solution.values['/refresh after logout']),
    {
      exactly: 401,
    },
  );
  report.target(
    'starter: status of /refresh after logout (its token refreshes on)',
    Number(starter.values['/refresh after logout']),
    {
      exactly: 200,
    },
  );
  const yours = meRow('your code');
  if (yours) report.figure('your code: status of /refresh after logout', Number(yours.values['/refresh after logout']));
  // Counted, not timed: equal work is what keeps the response time from revealing which usernames exist.
  report.target('argon2id hashes per failed login, known user', Number(wrongPassword.values['hashes/login']), {
    exactly: 1,
  });
  report.target('argon2id hashes per failed login, unknown user', Number(unknownUser.values['hashes/login']), {
    exactly: 1,
  });
}
const file = report.write({
  durationSec: DURATION_SEC,
  connections: { me: ME_CONNECTIONS, login: LOGIN_CONNECTIONS },
  hash: { params, msPerHash: hashMs },
});
console.log(`Figures written to ${file}`);
