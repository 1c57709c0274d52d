/**
 * Load script: "session vs token", measured. GET /me four ways, one autocannon run each: the starter's
 * JWT, the solution's JWT, the solution's JWT plus a `jti` deny-list, and a server-side session in
 * Redis. Evidence: Redis commands per request, and whether /me still answers 200 after logout (what
 * revocation costs each). Then POST /login (right password, wrong password, unknown user), to show the
 * price of argon2id per login and that a failed login costs one hash whether or not the user exists.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { hash, verify } from '@node-rs/argon2';
import {
  benchDurationSec,
  type ComparisonRow,
  forkServers,
  printComparison,
  runLoad,
  verdict,
  writeResults,
} from '@labs/bench';
import { DEMO_USERS, PASSWORD_HASH } from '../server/users.ts';

const DURATION_SEC = benchDurationSec(4);
const WARMUP_SEC = 1;
const ME_CONNECTIONS = 32;
const LOGIN_CONNECTIONS = 8;
const [ada] = DEMO_USERS;
const loginBody = JSON.stringify({ username: ada.username, password: ada.password });
const REVOCATION: Record<string, string> = {
  starter: 'impossible until exp',
  solution: 'refresh: at once; access: <= 5 min',
  'solution + jti deny-list': 'at once (SET jti)',
  'server-side session': 'at once (DEL)',
};

console.log(
  `JWT vs session load test: GET /me with ${ME_CONNECTIONS} connections, POST /login with ${LOGIN_CONNECTIONS}, ${DURATION_SEC} s per target (+${WARMUP_SEC} s warm-up for /me).`,
);
await using servers = await forkServers(new URL('./servers.ts', import.meta.url));

/** Logs in once and returns the headers that carry the credential: a bearer token or a session cookie. */
async function credentialsFor(baseUrl: string): Promise<Record<string, string>> {
  const res = await fetch(`${baseUrl}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: loginBody,
  });
  if (!res.ok) throw new Error(`login at ${baseUrl} answered ${res.status}`);
  const body = (await res.json()) as { accessToken?: string };
  if (body.accessToken) return { authorization: `Bearer ${body.accessToken}` };
  const sid = res.headers
    .getSetCookie()
    .find((c) => c.startsWith('sid='))
    ?.split(';')[0];
  if (!sid) throw new Error(`login at ${baseUrl} returned neither a token nor a session cookie`);
  return { cookie: sid };
}

/** Logs out with `headers`, then asks /me again with the same headers: 200 means "still logged in". */
async function statusAfterLogout(baseUrl: string, headers: Record<string, string>): Promise<number> {
  await (await fetch(`${baseUrl}/logout`, { method: 'POST', headers })).arrayBuffer();
  const res = await fetch(`${baseUrl}/me`, { headers });
  await res.arrayBuffer();
  return res.status;
}

const meRows: ComparisonRow[] = [];
for (const [name, baseUrl] of Object.entries(servers.urls)) {
  const headers = await credentialsFor(baseUrl);
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
  meRows.push({
    name,
    result,
    evidence: {
      'Redis cmds/req': Math.round((commands / Math.max(1, result.requests)) * 100) / 100,
      '/me after logout': await statusAfterLogout(baseUrl, headers),
      revocation: REVOCATION[name] ?? '-',
    },
  });
}
printComparison('GET /me: a stateless JWT check vs a server-side session lookup', meRows);

// One argon2id hash, timed alone in this process: the floor of every login's latency.
const sample = await hash(ada.password, PASSWORD_HASH);
const started = performance.now();
for (let i = 0; i < 5; i++) await verify(sample, ada.password);
const hashMs = Math.round(((performance.now() - started) / 5) * 10) / 10;
const params = `argon2id m=${PASSWORD_HASH.memoryCost / 1024} MiB t=${PASSWORD_HASH.timeCost} p=${PASSWORD_HASH.parallelism}`;

const loginRows: ComparisonRow[] = [];
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
  loginRows.push({
    name,
    result,
    evidence: {
      hash: params,
      'ms per hash': hashMs,
      'hashes/login': Math.round((hashes / Math.max(1, logins)) * 100) / 100,
      statuses: JSON.stringify(result.statusCounts),
    },
  });
}
printComparison('POST /login: the deliberate cost of a memory-hard password hash', loginRows);

const [, solution, denyList, session] = meRows;
const [, wrongPassword, unknownUser] = loginRows;
if (solution && denyList && session && wrongPassword && unknownUser) {
  verdict(
    solution.evidence['Redis cmds/req'] === 0,
    `solution: /me checks a signature and asks Redis nothing (${solution.evidence['Redis cmds/req']} commands per request)`,
  );
  verdict(
    session.evidence['/me after logout'] === 401 && denyList.evidence['/me after logout'] === 401,
    'session and deny-list: logout takes effect at once (401)',
  );
  verdict(
    solution.evidence['/me after logout'] === 200,
    'solution: the access token outlives logout until it expires (the stateless trade-off)',
  );
  // Counted, not timed: equal work is what keeps the response time from revealing which usernames exist.
  const [known, unknown] = [wrongPassword.evidence['hashes/login'], unknownUser.evidence['hashes/login']];
  verdict(
    known === 1 && unknown === 1,
    `one argon2id hash per failed login, for a known user (${known}) and an unknown one (${unknown})`,
  );
}
const file = writeResults(join(import.meta.dirname, '..'), 'jwt-refresh-tokens', {
  durationSec: DURATION_SEC,
  connections: { me: ME_CONNECTIONS, login: LOGIN_CONNECTIONS },
  hash: { params, msPerHash: hashMs },
  me: meRows,
  login: loginRows,
});
console.log(`Figures written to ${file}`);
