/**
 * @labs/lab-kit: what every lab's server shares. A lab describes itself once (`defineLab`) and is
 * started the same way by `lab serve`, its spec and its load script (`startLab`, `openLab`).
 */
export {
  currentTarget,
  defineLab,
  type DefinedLab,
  type BuiltLab,
  type LabContext,
  type LabDefinition,
  type LabTarget,
  type OpenLab,
  openLab,
  type Purpose,
  type RunningLab,
  startLab,
  uniqueId,
} from './define-lab.ts';
export {
  type InvariantPolicy,
  LAB_MANIFEST,
  type LabManifest,
  type LabPackage,
  labDirOf,
  readLabPackage,
  slugOf,
} from './manifest.ts';
export { type LabAppOptions, labApp } from './app.ts';
export { type JsonMessage, readJsonMessage } from './message.ts';
export { boundedPool, failFastRedis, type PoolBounds } from './bounds.ts';
export { ConfigError, describeIssues, parseInput, parseRequest, port, readConfig, wholeNumber } from './input.ts';
export { createQuietly, type SetupSql, setupTransaction } from './setup.ts';
export { bearerToken, loginInput, secretSetting } from './credentials.ts';
export { type FailureReporterOptions, failureReporter } from './failures.ts';
export { decodeSignedToken, issueSignedToken, SIGNED_TOKEN_TTL_SEC, verifySignedToken } from './signed-token.ts';
export {
  atMostEvery,
  notFound,
  type Outage,
  type Problem,
  problemHandler,
  type ProblemHandlerOptions,
  ServiceDownError,
  sendProblem,
} from './problem.ts';
export {
  type Attach,
  type Listening,
  listen,
  PortInUseError,
  PortNotAllowedError,
  SERVER_TIME_LIMITS,
  untilInterrupted,
} from './server.ts';
export {
  type ClosableSocket,
  closeWebSockets,
  handshakeProblem,
  refuseUpgrade,
  type UpgradeRefusal,
} from './upgrade.ts';
export { z } from 'zod';
export { meterSql, type SentSql, type SqlMeter, type SqlMeterOptions } from './sql-meter.ts';
