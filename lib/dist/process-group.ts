// The process group: one per process (= one rank), over torch's own
// distributed engine c10d, called from the addon. It reads torchrun's
// environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, and
// the agent's store under `torchrun --no_python`), or a file:// rendezvous;
// options override both.
import type { NativeProcessGroup, NativeReducible } from '../../types/native';
import { loadAddon } from '../model/native';
import { NgateError } from '../util/errors';

export type DistBackend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'max' | 'min';

/** torch's own default is 30 minutes; a hung rank is noticed after this long (see README, "More than one GPU"). */
export const DEFAULT_DIST_TIMEOUT_MS = 30 * 60 * 1000;
const DEFAULT_STORE_TIMEOUT_MS = 5 * 60 * 1000;

export interface InitProcessGroupOptions {
  /** Default $RANK. */
  rank?: number;
  /** Number of ranks; default $WORLD_SIZE. */
  size?: number;
  /** This rank's index on its machine (picks the GPU); default $LOCAL_RANK, else rank. */
  localRank?: number;
  /** Where rank 0 hosts the rendezvous store; default $MASTER_ADDR, else 127.0.0.1. */
  masterAddr?: string;
  /** Default $MASTER_PORT, else 29500. */
  masterPort?: number;
  /**
   * 'env://' (default: the variables above), 'tcp://HOST:PORT', or
   * 'file:///path' (a file all ranks see, that no earlier run has used).
   * Default $NGATE_INIT_METHOD.
   */
  initMethod?: string;
  /** Where this rank's model runs: 'auto' (default: its GPU when there is one), 'cpu', 'cuda' (GPU LOCAL_RANK) or 'cuda:N'. */
  device?: string;
  /** 'auto' (default): NCCL when the device is a GPU and this build has NCCL, else Gloo. */
  backend?: 'auto' | DistBackend;
  /** How long a collective waits for the other ranks before failing; default $NGATE_DIST_TIMEOUT_MS, else 30 min. */
  timeoutMs?: number;
  /** How long the rendezvous waits for every rank to join; default 5 min. */
  storeTimeoutMs?: number;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim())) throw new NgateError('ERR_INPUT', `must be a non-negative integer, got ${JSON.stringify(v)}`, { field: name });
  return Number(v);
}

/** True when this process was launched as one of several ranks (WORLD_SIZE > 1). */
export function launchedDistributed(): boolean {
  return (envInt('WORLD_SIZE') ?? 1) > 1;
}

/** "3s", "500ms", "10m", "1h" or a number of seconds, in milliseconds. */
export function parseDuration(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$/.exec(s);
  if (!m) throw new NgateError('ERR_INPUT', `"${s}" is not a duration such as 90s, 10m or 500ms`);
  const unit = m[2] ?? 's';
  const ms = Number(m[1]) * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'h' ? 3600e3 : 60e3);
  if (!(ms >= 1)) throw new NgateError('ERR_INPUT', `"${s}" is shorter than a millisecond`);
  return Math.round(ms);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * One rank's membership of a process group. Every collective is a job on the
 * addon's worker thread, queued behind the model work this process asked for
 * before it, so collectives reach the group in the order they were called;
 * every rank must call them in the same order.
 */
export class ProcessGroup {
  private failure: NgateError | null = null;
  private destroyed = false;

  /** @internal use initProcessGroup() */
  constructor(readonly native: NativeProcessGroup, readonly rank: number, readonly size: number, readonly localRank: number,
    readonly backend: DistBackend, readonly device: string, readonly timeoutMs: number) {}

  /** Whether a collective has failed; the group cannot be used again (end the process). */
  get failed(): boolean { return this.failure !== null || this.native.failed; }

  private async collective<T>(what: string, run: () => Promise<T>): Promise<T> {
    if (this.destroyed) throw new NgateError('ERR_DIST', `the process group has been destroyed (rank ${this.rank} of ${this.size})`);
    if (this.failure) throw this.failure;
    if (this.native.failed) throw new NgateError('ERR_DIST', `rank ${this.rank} of ${this.size}: a collective of this group failed earlier; it cannot be used again`);
    try {
      return await run();
    } catch (e) {
      if (e instanceof NgateError) throw e;
      this.failure = new NgateError('ERR_DIST', `rank ${this.rank} of ${this.size}: ${what} failed: ${(e as Error).message}`, { cause: e });
      throw this.failure;
    }
  }

  /** The element-wise sum (max, min) of `data` over the ranks, as a new array of the same kind. */
  allreduce<T extends NativeReducible>(data: T, op: ReduceOp = 'sum'): Promise<T> {
    return this.collective(`all-reduce (${op}) of ${data.length} values`, () => this.native.allreduce(data, op));
  }

  /** Returns when every rank has called it. */
  async barrier(): Promise<void> {
    await this.allreduce(new Int32Array(1));
  }

  /**
   * Every rank's bytes, in rank order, on every rank. Exact: each byte has one
   * contributor and the others add zeros.
   */
  async gatherBytes(mine: Uint8Array): Promise<Uint8Array[]> {
    const lengths = new Float64Array(this.size);
    lengths[this.rank] = mine.length;
    const all = await this.allreduce(lengths);
    const offsets = [0];
    for (let r = 0; r < this.size; r++) offsets.push(offsets[r] + all[r]);
    const buf = new Uint8Array(offsets[this.size]);
    buf.set(mine, offsets[this.rank]);
    const sum = await this.allreduce(buf);
    return Array.from({ length: this.size }, (_, r) => sum.subarray(offsets[r], offsets[r + 1]));
  }

  /** Every rank's value (as JSON), in rank order, on every rank. */
  async gatherJson<T>(mine: T): Promise<T[]> {
    const parts = await this.gatherBytes(new TextEncoder().encode(JSON.stringify(mine)));
    const dec = new TextDecoder();
    return parts.map((p) => JSON.parse(dec.decode(p)) as T);
  }

  /**
   * Leaves the group. A group whose collective failed is not torn down (its
   * threads may wait on a peer forever); end the process instead.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.native.destroy();
  }
}

/** The rendezvous and backend initProcessGroup would use, without joining (for messages and tests). */
export function resolveGroupOptions(opts: InitProcessGroupOptions = {}) {
  const size = opts.size ?? envInt('WORLD_SIZE') ?? 1;
  const rank = opts.rank ?? envInt('RANK') ?? 0;
  if (!Number.isInteger(size) || size < 1) throw new NgateError('ERR_INPUT', `the group size must be a positive integer, got ${size}`, { field: 'WORLD_SIZE' });
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new NgateError('ERR_INPUT', `rank ${rank} is not in [0, ${size})`, { field: 'RANK' });
  const localRank = opts.localRank ?? envInt('LOCAL_RANK') ?? rank;
  const initMethod = opts.initMethod ?? process.env.NGATE_INIT_METHOD ?? 'env://';
  let host = opts.masterAddr ?? process.env.MASTER_ADDR ?? '127.0.0.1';
  let port = opts.masterPort ?? envInt('MASTER_PORT') ?? 29500;
  let file: string | undefined;
  if (initMethod.startsWith('file://')) {
    file = decodeURIComponent(initMethod.slice('file://'.length));
    if (!file.startsWith('/')) throw new NgateError('ERR_INPUT', `a file:// init method needs an absolute path, got ${initMethod}`, { field: 'initMethod' });
  } else if (initMethod.startsWith('tcp://')) {
    const m = /^tcp:\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(initMethod);
    if (!m) throw new NgateError('ERR_INPUT', `expected tcp://HOST:PORT, got ${initMethod}`, { field: 'initMethod' });
    host = m[1];
    port = Number(m[2]);
  } else if (initMethod !== 'env://') {
    throw new NgateError('ERR_INPUT', `unknown init method ${JSON.stringify(initMethod)} (expected env://, tcp://HOST:PORT or file:///path)`, { field: 'initMethod' });
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new NgateError('ERR_INPUT', `port ${port} is not in [1, 65535]`, { field: 'MASTER_PORT' });
  // Under `torchrun --no_python` the agent already hosts the store at
  // MASTER_ADDR:MASTER_PORT: every rank is a client, and keys go under the
  // restart's namespace, as torch.distributed's own rendezvous does.
  const agentStore = process.env.TORCHELASTIC_USE_AGENT_STORE === 'True';
  const prefix = agentStore ? `/worker/attempt_${envInt('TORCHELASTIC_RESTART_COUNT') ?? 0}/ngate` : 'ngate';
  const timeoutMs = opts.timeoutMs ?? envInt('NGATE_DIST_TIMEOUT_MS') ?? DEFAULT_DIST_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs < 1) throw new NgateError('ERR_INPUT', `timeoutMs must be positive, got ${timeoutMs}`, { field: 'timeoutMs' });
  // Gloo binds each rank's own network device, never the master's address:
  // GLOO_SOCKET_IFNAME when set (as torch honours it), loopback when every
  // rank is on this machine, else the address of this machine's host name
  // (c10d's default device).
  const localSize = envInt('LOCAL_WORLD_SIZE');
  const oneHost = file ? localSize === size : isLoopback(host);
  return {
    rank, size, localRank, host, port, file, prefix, storeServer: !agentStore && rank === 0,
    timeoutMs, storeTimeoutMs: opts.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS,
    interface: process.env.GLOO_SOCKET_IFNAME || undefined,
    bindHost: !process.env.GLOO_SOCKET_IFNAME && oneHost ? '127.0.0.1' : undefined,
  };
}

/**
 * Joins the process group this process belongs to (see InitProcessGroupOptions);
 * resolves once every rank has joined. Throws ERR_UNSUPPORTED when the addon
 * was built without c10d, ERR_INPUT for a bad environment, ERR_DIST when the
 * rendezvous fails or times out.
 */
export async function initProcessGroup(opts: InitProcessGroupOptions = {}): Promise<ProcessGroup> {
  const o = resolveGroupOptions(opts);
  const addon = loadAddon();
  const backends = addon.distBackends();
  if (!backends.gloo && !backends.nccl) {
    throw new NgateError('ERR_UNSUPPORTED', 'this build of the addon has no distributed support: it was built without torch\'s c10d ' +
      'headers (on Debian: apt-get install libgloo-dev, then `npm run build:native`; `node scripts/find-dist.js` says what is missing)');
  }
  const info = addon.info();
  const want = opts.device ?? 'auto';
  let device: string;
  if (want === 'auto') device = info.cuda && o.localRank < info.cudaDevices ? `cuda:${o.localRank}` : 'cpu';
  else if (want === 'cpu') device = 'cpu';
  else if (want === 'cuda') device = `cuda:${o.localRank}`;
  else if (/^cuda:\d+$/.test(want)) device = want;
  else throw new NgateError('ERR_DEVICE', `unknown device "${want}" (expected auto, cpu, cuda or cuda:N)`, { field: 'device' });
  if (device !== 'cpu') {
    const index = Number(device.slice(5));
    if (!info.cuda || index >= info.cudaDevices) {
      throw new NgateError('ERR_DEVICE', `rank ${o.rank} wants ${device}, but this machine's libtorch sees ${info.cuda ? info.cudaDevices : 'no'} CUDA GPU(s)`, { field: 'device' });
    }
  }
  let backend: DistBackend;
  const asked = opts.backend ?? 'auto';
  if (asked === 'auto') backend = device !== 'cpu' && backends.nccl ? 'nccl' : 'gloo';
  else backend = asked;
  if (backend === 'nccl' && device === 'cpu') throw new NgateError('ERR_INPUT', 'the NCCL backend needs a GPU device', { field: 'backend' });
  if (!backends[backend]) {
    throw new NgateError('ERR_UNSUPPORTED', `this build of the addon has no ${backend === 'nccl' ? 'NCCL' : 'Gloo'} backend ` +
      `(it has ${backends.gloo ? 'Gloo' : 'NCCL'}; \`node scripts/find-dist.js\` says what is missing)`);
  }
  const native = new addon.NativeProcessGroup();
  try {
    await native.init({
      rank: o.rank, size: o.size, backend, host: o.host, port: o.port, file: o.file, storeServer: o.storeServer, prefix: o.prefix,
      timeoutMs: o.timeoutMs, storeTimeoutMs: o.storeTimeoutMs, interface: o.interface, bindHost: o.bindHost,
      cudaDevice: device === 'cpu' ? 0 : Number(device.slice(5)),
    });
  } catch (e) {
    const where = o.file ? `file://${o.file}` : `${o.host}:${o.port}`;
    throw new NgateError('ERR_DIST', `rank ${o.rank} of ${o.size} could not join the process group at ${where}: ${(e as Error).message}`, { cause: e });
  }
  return new ProcessGroup(native, o.rank, o.size, o.localRank, backend, device, o.timeoutMs);
}
