import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { NgateError } from '../lib/util/errors';
import { PickleDict, readTorchCheckpoint, stateDict, TorchTensor } from '../lib/model/torch-checkpoint';
import { fromBf16, fromF16, makeTempDir } from './fixtures/checkpoint';
import { dict, ordered, pickleValue, PyRaw, PyTensor, torchSave, tuple, zipStored } from './fixtures/torch-save';

const dirs: string[] = [];
function tmp(): string { const d = makeTempDir('ngate-pth-'); dirs.push(d); return d; }
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

// Debian's python3-torch (scripts/setup-debian.sh installs it); the cross-checks need it.
const PYTHON = '/usr/bin/python3';
const hasTorch = fs.existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const withTorch = hasTorch ? test : test.skip;

function values(file: string, t: TorchTensor): number[] {
  const buf = fs.readFileSync(file).subarray(t.begin, t.end);
  const bytes = new Uint8Array(buf);
  switch (t.dtype) {
    case 'F32': return Array.from(new Float32Array(bytes.slice().buffer));
    case 'F64': return Array.from(new Float64Array(bytes.slice().buffer));
    case 'F16': return Array.from(fromF16(bytes));
    case 'BF16': return Array.from(fromBf16(bytes));
    case 'I64': return Array.from(new BigInt64Array(bytes.slice().buffer), Number);
    case 'I32': return Array.from(new Int32Array(bytes.slice().buffer));
    default: throw new Error(t.dtype);
  }
}

function python(script: string): string {
  const r = spawnSync(PYTHON, ['-c', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

function expectCheckpointError(file: string, pattern: RegExp): void {
  let err: unknown;
  try { readTorchCheckpoint(file); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(NgateError);
  expect((err as NgateError).code).toBe('ERR_CHECKPOINT');
  expect((err as NgateError).message).toContain(file);
  expect((err as NgateError).message).toMatch(pattern);
}

describe('readTorchCheckpoint', () => {
  test('reads what the fixture writer writes: nested dicts, tensors of every dtype, byte ranges in the file', () => {
    const file = path.join(tmp(), 'stage2.pth');
    torchSave(file, dict({
      model: ordered({
        'llama_proj.weight': new PyTensor('F32', [2, 3], [1, 2, 3, 4, 5, 6]),
        'llama_proj.bias': new PyTensor('F16', [2], [0.5, -1], { parameter: true }),
        'x.inv_freq': new PyTensor('BF16', [2], [1, 0.25]),
      }),
      optimizer: dict({ state: dict([[0, dict({ step: new PyTensor('F32', [], [3]), exp_avg: new PyTensor('F64', [2], [1, 2]) })]]),
        param_groups: [dict({ lr: 1e-4, betas: tuple(0.9, 0.999), params: [0, 1] })] }),
      epoch: 3, scaler: dict({ scale: 65536.0, growth: 2 ** 40 }), config: dict({ arch: 'minigpt4', flag: true, none: null }),
    }));
    const ckpt = readTorchCheckpoint(file);
    expect(ckpt.prefix).toBe('stage2');
    expect(ckpt.globals).toEqual(expect.arrayContaining(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage', 'torch.HalfStorage']));
    const model = stateDict(ckpt, ['model']);
    expect([...model.keys()]).toEqual(['llama_proj.weight', 'llama_proj.bias', 'x.inv_freq']);
    expect(model.get('llama_proj.weight')!.shape).toEqual([2, 3]);
    expect(values(file, model.get('llama_proj.weight')!)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(values(file, model.get('llama_proj.bias')!)).toEqual([0.5, -1]);
    expect(values(file, model.get('x.inv_freq')!)).toEqual([1, 0.25]);
    expect(ckpt.tensors.get('optimizer.state.0.step')!.shape).toEqual([]);
    expect(values(file, ckpt.tensors.get('optimizer.state.0.exp_avg')!)).toEqual([1, 2]);
    const root = ckpt.root as PickleDict;
    expect(root.entries.get('epoch')).toBe(3);
    expect((root.entries.get('scaler') as PickleDict).entries.get('growth')).toBe(2 ** 40);
    // Storages are 64-byte aligned, as torch writes them.
    for (const t of ckpt.tensors.values()) expect(t.storage.begin % 64).toBe(0);
  });

  withTorch('torch.load reads the fixture writer\'s files as written', () => {
    const file = path.join(tmp(), 'w.pth');
    torchSave(file, ordered({
      a: new PyTensor('F32', [2, 2], [1.5, -2, 3, 4]), b: new PyTensor('BF16', [3], [1, 2, 3], { parameter: true }),
      c: new PyTensor('I64', [2], [7, -9]), n: dict({ x: tuple(1, 'two', null, false, 2.5), big: -(2 ** 40) }),
    }));
    const out = JSON.parse(python(`
import torch, json
d = torch.load(${JSON.stringify(file)})
print(json.dumps({'type': type(d).__name__, 'a': d['a'].tolist(), 'b': d['b'].float().tolist(), 'bdtype': str(d['b'].dtype),
  'bparam': isinstance(d['b'], torch.nn.Parameter), 'c': d['c'].tolist(), 'n': [list(d['n']['x']), d['n']['big']]}))`));
    expect(out).toEqual({ type: 'OrderedDict', a: [[1.5, -2], [3, 4]], b: [1, 2, 3], bdtype: 'torch.bfloat16', bparam: true, c: [7, -9], n: [[1, 'two', null, false, 2.5], -(2 ** 40)] });
  });

  withTorch('reads real torch.save output: state dicts with metadata, parameters, views, every storage type', () => {
    const dir = tmp();
    const file = path.join(dir, 'real.pth');
    const out = JSON.parse(python(`
import torch, json, collections
torch.manual_seed(0)
lin = torch.nn.Linear(3, 2)
base = torch.arange(12, dtype=torch.float32)
obj = {'model': lin.state_dict(), 'half': torch.randn(2, 2).half(), 'bf16': torch.randn(3).bfloat16(),
       'long': torch.tensor([1, -2, 3]), 'int': torch.tensor([4, 5], dtype=torch.int32), 'double': torch.randn(2).double(),
       'param': torch.nn.Parameter(torch.randn(2)), 'view': base[4:10].view(2, 3), 'shared': base,
       'optimizer': {'state': {0: {'step': torch.tensor(3.0)}}, 'param_groups': [{'lr': 0.001, 'betas': (0.9, 0.999), 'params': [0]}]},
       'epoch': 4, 'config': {'arch': 'minigpt4', 'low_resource': True}}
torch.save(obj, ${JSON.stringify(file)})
flat = {}
def walk(v, name):
    if isinstance(v, torch.Tensor): flat[name] = [str(v.dtype), list(v.shape), v.detach().double().flatten().tolist()]
    elif isinstance(v, dict):
        for k, x in v.items(): walk(x, (name + '.' if name else '') + str(k))
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v): walk(x, (name + '.' if name else '') + str(i))
walk(obj, '')
print(json.dumps(flat))`)) as Record<string, [string, number[], number[]]>;
    const ckpt = readTorchCheckpoint(file);
    expect(ckpt.prefix).toBe('real');
    const dtypes: Record<string, string> = { 'torch.float32': 'F32', 'torch.float16': 'F16', 'torch.bfloat16': 'BF16', 'torch.int64': 'I64', 'torch.int32': 'I32', 'torch.float64': 'F64' };
    expect([...ckpt.tensors.keys()].sort()).toEqual(Object.keys(out).sort());
    for (const [name, [dtype, shape, vals]] of Object.entries(out)) {
      const t = ckpt.tensors.get(name)!;
      expect([name, t.dtype, t.shape]).toEqual([name, dtypes[dtype], shape]);
      expect(t.contiguous).toBe(true);
      const got = values(file, t);
      vals.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 6));
    }
    expect(ckpt.tensors.get('view')!.offset).toBe(4);
    expect(stateDict(ckpt, ['model']).size).toBe(2);
  });
});

describe('bad and unsafe .pth files: a clear error, and nothing runs', () => {
  function rawPickleFile(pickle: number[] | Uint8Array, storages: Map<string, Uint8Array> = new Map()): string {
    const file = path.join(tmp(), 'bad.pth');
    const records: { name: string; data: Uint8Array }[] = [{ name: 'archive/data.pkl', data: Uint8Array.from(pickle) }];
    for (const [k, d] of storages) records.push({ name: `archive/data/${k}`, data: d });
    records.push({ name: 'archive/version', data: Buffer.from('3\n') });
    fs.writeFileSync(file, zipStored(records));
    return file;
  }
  const ascii = (s: string): number[] => [...Buffer.from(s, 'latin1')];
  const marker = path.join(makeTempDir('ngate-pwned-'), 'pwned');
  afterAll(() => fs.rmSync(path.dirname(marker), { recursive: true, force: true }));

  test('os.system through GLOBAL and REDUCE is refused by name before anything could run', () => {
    const file = rawPickleFile([0x80, 2, 0x63, ...ascii('os\nsystem\n'), 0x58, ...[marker.length + 6, 0, 0, 0], ...ascii(`touch ${marker}`), 0x85, 0x52, 0x2e]);
    expectCheckpointError(file, /global os\.system.*nothing was run/);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test.each([
    ['builtins.eval via STACK_GLOBAL', [0x80, 2, 0x58, 8, 0, 0, 0, ...ascii('builtins'), 0x58, 4, 0, 0, 0, ...ascii('eval'), 0x93, 0x58, 1, 0, 0, 0, ...ascii('1'), 0x85, 0x52, 0x2e], /global builtins\.eval/],
    ['an unknown class via NEWOBJ', [0x80, 2, 0x63, ...ascii('__main__\nEvil\n'), 0x29, 0x81, 0x2e], /global __main__\.Evil/],
    ['torch.nn.Module', [0x80, 2, 0x63, ...ascii('torch.nn.modules.module\nModule\n'), 0x29, 0x52, 0x2e], /global torch\.nn\.modules\.module\.Module/],
    ['subprocess via protocol 0 INST', [0x28, 0x69, ...ascii('subprocess\nPopen\n'), 0x2e], /opcode 0x69/],
    ['OBJ', [0x80, 2, 0x28, 0x63, ...ascii('collections\nOrderedDict\n'), 0x6f, 0x2e], /opcode 0x6f/],
    ['calling a storage type', [0x80, 2, 0x63, ...ascii('torch\nFloatStorage\n'), 0x29, 0x52, 0x2e], /type, not a function/],
    ['an OrderedDict built from arguments', [0x80, 2, 0x63, ...ascii('collections\nOrderedDict\n'), 0x5d, 0x85, 0x52, 0x2e], /OrderedDict from arguments/],
    ['BUILD on a list', [0x80, 2, 0x5d, 0x7d, 0x62, 0x2e], /sets the state/],
    ['a persistent id that is not a storage', [0x80, 2, 0x58, 3, 0, 0, 0, ...ascii('abc'), 0x51, 0x2e], /persistent object that is not a storage/],
    ['a memo entry never written', [0x80, 2, 0x68, 5, 0x2e], /memo entry 5/],
    ['an empty stack', [0x80, 2, 0x30, 0x2e], /empty stack/],
    ['a pickle cut short', [0x80, 2, 0x58, 100, 0, 0, 0, 0x41], /ends in the middle/],
  ])('%s', (_name, bytes, pattern) => {
    expectCheckpointError(rawPickleFile(bytes as number[]), pattern as RegExp);
  });

  test('containers nested a million deep, and a list that holds itself', () => {
    const deep = [0x80, 2, ...new Array(1_000_000).fill(0x5d), ...new Array(999_999).fill(0x61), 0x2e];
    expectCheckpointError(rawPickleFile(deep), /nests containers more than 256 deep/);
    // l = []; l.append(l); {l-as-tuple-key: 1}
    const cyclic = readTorchCheckpoint(rawPickleFile([0x80, 2, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x7d, 0x68, 0, 0x4b, 1, 0x73, 0x2e]));
    expect([...(cyclic.root as PickleDict).entries.keys()]).toEqual(['[a self-referencing key]']);
  });

  test('a tensor that reaches past its storage, or whose storage record is missing or short', () => {
    const { pickle, storages } = pickleValue(ordered({ w: new PyTensor('F32', [4], [1, 2, 3, 4]) }));
    expectCheckpointError(rawPickleFile(pickle, new Map()), /record archive\/data\/0 .* is missing/);
    expectCheckpointError(rawPickleFile(pickle, new Map([['0', storages.get('0')!.slice(0, 8)]])), /storage 0 holds 8 bytes, 16 expected/);
    const view = pickleValue(ordered({ w: new PyTensor('F32', [3], [1, 2, 3, 4], { storage: { key: '0', offset: 2, numel: 4 } }) }));
    expectCheckpointError(rawPickleFile(view.pickle, view.storages), /reaches past the end of its storage/);
  });

  test('truncated, non-zip, legacy and compressed files', () => {
    const dir = tmp();
    const good = path.join(dir, 'good.pth');
    torchSave(good, ordered({ w: new PyTensor('F32', [64], new Array(64).fill(1)) }));
    const bytes = fs.readFileSync(good);
    for (const cut of [bytes.length - 10, Math.floor(bytes.length / 2), 100, 3]) {
      const f = path.join(dir, `cut${cut}.pth`);
      fs.writeFileSync(f, bytes.subarray(0, cut));
      expectCheckpointError(f, /truncated|not a torch\.save file|not a zip archive/);
    }
    const text = path.join(dir, 'text.pth');
    fs.writeFileSync(text, 'hello, this is not a checkpoint at all');
    expectCheckpointError(text, /not a torch\.save file/);
    const legacy = path.join(dir, 'legacy.pth');
    fs.writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
    expectCheckpointError(legacy, /legacy \(non-zip\) torch\.save format.*weights_only=True/);
    const compressed = Buffer.from(bytes);
    compressed.writeUInt16LE(8, compressed.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])) + 10);
    const cf = path.join(dir, 'deflated.pth');
    fs.writeFileSync(cf, compressed);
    expectCheckpointError(cf, /is compressed/);
    const none = path.join(dir, 'nopkl.pth');
    fs.writeFileSync(none, zipStored([{ name: 'archive/version', data: Buffer.from('3\n') }]));
    expectCheckpointError(none, /no <name>\/data\.pkl/);
    expect(() => readTorchCheckpoint(path.join(dir, 'missing.pth'))).toThrow(expect.objectContaining({ code: 'ERR_MISSING_FILE' }));
  });

  withTorch('torch.save of a legacy-format file is refused with the resave command', () => {
    const file = path.join(tmp(), 'old.pth');
    python(`import torch; torch.save({'w': torch.ones(2)}, ${JSON.stringify(file)}, _use_new_zipfile_serialization=False)`);
    expectCheckpointError(file, /legacy \(non-zip\)/);
  });

  test('spliced raw bytes inside an otherwise good dict are checked like the rest', () => {
    const file = path.join(tmp(), 'spliced.pth');
    torchSave(file, dict({ ok: 1, evil: new PyRaw(Uint8Array.from([0x63, ...ascii('posix\nsystem\n'), 0x29, 0x52])) }));
    expectCheckpointError(file, /global posix\.system/);
  });
});
