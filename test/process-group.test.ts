// The process group's JavaScript side, in one process: how torchrun's
// environment and the options become a rendezvous, durations, and the clear
// errors of a build without c10d and of a bad environment.
import * as fs from 'fs';
import { initProcessGroup, parseDuration } from '../lib';
import { EXIT, main } from '../lib/cli';
import { resolveGroupOptions } from '../lib/dist/process-group';
import { assignUnits } from '../lib/dist/shards';
import * as native from '../lib/model/native';

const saved = { ...process.env };
afterEach(() => {
  process.env = { ...saved };
  jest.restoreAllMocks();
});

function env(vars: Record<string, string | undefined>): void {
  for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'NGATE_INIT_METHOD',
    'TORCHELASTIC_USE_AGENT_STORE', 'TORCHELASTIC_RESTART_COUNT', 'GLOO_SOCKET_IFNAME', 'NGATE_DIST_TIMEOUT_MS']) delete process.env[k];
  Object.assign(process.env, vars);
}

describe('the rendezvous from the environment', () => {
  test('torchrun\'s variables; rank 0 hosts the store; the loopback by default', () => {
    env({ RANK: '1', WORLD_SIZE: '4', LOCAL_RANK: '1', MASTER_PORT: '29601' });
    const o = resolveGroupOptions();
    expect(o).toMatchObject({ rank: 1, size: 4, localRank: 1, host: '127.0.0.1', port: 29601, storeServer: false, prefix: 'ngate', bindHost: '127.0.0.1' });
    env({ RANK: '0', WORLD_SIZE: '2' });
    expect(resolveGroupOptions()).toMatchObject({ rank: 0, storeServer: true, host: '127.0.0.1', port: 29500, timeoutMs: 30 * 60 * 1000 });
  });

  test('under torchrun --no_python every rank is a client of the agent\'s store, in the restart\'s namespace', () => {
    env({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '29400', TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RESTART_COUNT: '3' });
    const o = resolveGroupOptions();
    expect(o).toMatchObject({ storeServer: false, prefix: '/worker/attempt_3/ngate', host: '10.0.0.5' });
    // Several machines: Gloo binds this machine's own address (c10d's default device), not the master's.
    expect(o.bindHost).toBeUndefined();
  });

  test('options override the environment; file:// and tcp:// init methods; GLOO_SOCKET_IFNAME', () => {
    env({ RANK: '3', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '4', GLOO_SOCKET_IFNAME: 'eth1' });
    expect(resolveGroupOptions({ rank: 0, size: 2, initMethod: 'tcp://192.168.1.2:1234', timeoutMs: 3000 }))
      .toMatchObject({ rank: 0, size: 2, host: '192.168.1.2', port: 1234, timeoutMs: 3000, interface: 'eth1', bindHost: undefined });
    env({ RANK: '1', WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2', NGATE_INIT_METHOD: 'file:///tmp/ngate%20store' });
    expect(resolveGroupOptions()).toMatchObject({ file: '/tmp/ngate store', bindHost: '127.0.0.1' });
  });

  test('a bad environment is an ERR_INPUT that names the variable', () => {
    env({ RANK: 'one', WORLD_SIZE: '2' });
    expect(() => resolveGroupOptions()).toThrow(/RANK.*non-negative integer/);
    env({ RANK: '2', WORLD_SIZE: '2' });
    expect(() => resolveGroupOptions()).toThrow(expect.objectContaining({ code: 'ERR_INPUT', field: 'RANK' }));
    env({ MASTER_PORT: '70000' });
    expect(() => resolveGroupOptions()).toThrow(/MASTER_PORT/);
    expect(() => resolveGroupOptions({ initMethod: 'file://relative/path' })).toThrow(/absolute path/);
    expect(() => resolveGroupOptions({ initMethod: 'nccl://x' })).toThrow(/unknown init method/);
  });
});

test('durations: 3s, 500ms, 10m, 1h, plain seconds; nonsense is refused', () => {
  expect([parseDuration('3s'), parseDuration('500ms'), parseDuration('10m'), parseDuration('1h'), parseDuration('90')])
    .toEqual([3000, 500, 600000, 3600000, 90000]);
  expect(() => parseDuration('soon')).toThrow(/not a duration/);
  expect(() => parseDuration('0s')).toThrow(/shorter/);
});

test('an addon built without c10d: initProcessGroup throws ERR_UNSUPPORTED saying how to get it', async () => {
  const real = native.loadAddon();
  jest.spyOn(native, 'loadAddon').mockReturnValue({ ...real, distBackends: () => ({ gloo: false, nccl: false }) });
  env({});
  await expect(initProcessGroup()).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED', message: expect.stringMatching(/libgloo-dev/) });
});

test('an NCCL group needs a GPU; a GPU that is not there is an ERR_DEVICE', async () => {
  env({});
  const info = native.loadAddon().info();
  if (!info.cuda) {
    await expect(initProcessGroup({ device: 'cuda' })).rejects.toMatchObject({ code: 'ERR_DEVICE' });
    await expect(initProcessGroup({ device: 'cpu', backend: 'nccl' })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'backend' });
  }
  await expect(initProcessGroup({ device: 'tpu' })).rejects.toMatchObject({ code: 'ERR_DEVICE' });
});

test('a group of one: collectives return their input, and work is not split', async () => {
  env({});
  const store = `/tmp/ngate-pg-test-${process.pid}-${Date.now()}`;
  const g = await initProcessGroup({ initMethod: `file://${store}`, size: 1, rank: 0, device: 'cpu' });
  expect([g.rank, g.size, g.backend, g.device]).toEqual([0, 1, 'gloo', 'cpu']);
  expect([...(await g.allreduce(Float64Array.from([1.5, -2]), 'max'))]).toEqual([1.5, -2]);
  expect(await g.gatherJson({ a: 'é' })).toEqual([{ a: 'é' }]);
  expect(await assignUnits(5, g, (u) => u === 2)).toEqual({ compute: [0, 1, 3, 4], load: [2] });
  await g.destroy();
  await expect(g.barrier()).rejects.toMatchObject({ code: 'ERR_DIST' });
  fs.rmSync(store, { force: true });
});

test('as one of several ranks, a command that does not spread its work refuses to run (exit 2)', async () => {
  env({ RANK: '1', WORLD_SIZE: '2' });
  let err = '';
  const code = await main(['data', '--out', '/tmp/never-written-by-ngate'], { stdout: { write: () => true }, stderr: { write: (s: string) => { err += s; } } });
  expect(code).toBe(EXIT.usage);
  expect(err).toMatch(/data does not run across ranks/);
  expect(fs.existsSync('/tmp/never-written-by-ngate')).toBe(false);
});
