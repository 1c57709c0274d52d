/** The machine a bench ran on, recorded beside its figures: req/s mean little without it. */
import { availableParallelism, cpus, platform, release, arch, totalmem } from 'node:os';

/** What the figures were measured on. */
export interface MachineInfo {
  /** CPUs this process may use. */
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  os: string;
}

/** Describes this machine. */
export function machineInfo(): MachineInfo {
  return {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${platform()} ${release()} ${arch()}`,
  };
}
