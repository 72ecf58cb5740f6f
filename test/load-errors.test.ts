// Broken checkpoints through the whole load path: each is a good tiny LLaMA
// damaged by code, and loadModel must reject it with an NgateError that names
// the file and the reason, before the native addon ever sees it. Afterwards a
// good model still loads and runs in the same process.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModel, LoadOptions, ModelDtype, NgateError } from '../lib';
import { loadAddon } from '../lib/model/native';
import { makeTempDir, TinyLlamaOptions, writeTinyLlama } from './fixtures/checkpoint';

const ST = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

// ---------------------------------------------------------------------------
// Making and damaging checkpoints.

const made: string[] = [];

/** A fresh, good tiny checkpoint in its own temp folder. */
function good(opts: TinyLlamaOptions = {}): string {
  const dir = writeTinyLlama(makeTempDir('ngate-load-errors-'), { seed: 11, ...opts }).dir;
  made.push(dir);
  return dir;
}

type HeaderEntry = { dtype: string; shape: number[]; data_offsets: [number, number] };
type HeaderJson = Record<string, HeaderEntry> & { __metadata__?: Record<string, string> };

interface StFile { headerLen: number; json: HeaderJson; data: Buffer; }

/** Splits a safetensors file into its header JSON and data bytes (no validation: the fixture wrote it). */
function readSt(file: string): StFile {
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  return { headerLen, json: JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')), data: buf.subarray(8 + headerLen) };
}

/** Writes a safetensors file from a header object and data bytes, as-is. */
function writeSt(file: string, json: unknown, data: Buffer): void {
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([len, text, data]));
}

/** Rewrites the header of `file` in place, keeping the data bytes. */
function editHeader(file: string, edit: (json: HeaderJson) => void): void {
  const st = readSt(file);
  edit(st.json);
  writeSt(file, st.json, st.data);
}

function editJson(file: string, edit: (json: Record<string, any>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json, null, 2) + '\n');
}

/** The shard file that holds `tensor` according to the index. */
function shardOf(dir: string, tensor: string): string {
  const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX), 'utf8'));
  return path.join(dir, index.weight_map[tensor]);
}

// ---------------------------------------------------------------------------
// Watching the addon: every failure below must happen before a NativeModel is
// even constructed, i.e. before native code opens any weight file.

const addon = loadAddon();
const RealNativeModel = addon.NativeModel;
let nativeModelsMade = 0;
const cudaPresent = addon.info().cuda;

beforeAll(() => {
  addon.NativeModel = new Proxy(RealNativeModel, {
    construct(target, args) {
      nativeModelsMade++;
      return Reflect.construct(target, args);
    },
  });
});

afterAll(() => {
  addon.NativeModel = RealNativeModel;
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

interface Expected {
  code: string;
  /** The file the error must name (as `err.file` and in the message); omit for option errors. */
  file?: string;
  /** The phrase naming the reason. */
  reason: RegExp;
  /** `err.field`, when the error is about one. */
  field?: string;
}

/** Loads `dir`, expects the given NgateError, and checks native code was never reached. */
async function expectLoadFails(dir: string, opts: LoadOptions, want: Expected): Promise<NgateError> {
  const before = nativeModelsMade;
  let err: unknown;
  try {
    const model = await loadModel(dir, opts);
    model.dispose();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(NgateError);
  const e = err as NgateError;
  expect(e.name).toBe('NgateError');
  expect(e.code).toBe(want.code);
  expect(e.message).toMatch(want.reason);
  if (want.file !== undefined) {
    expect(e.file).toBe(want.file);
    expect(e.message).toContain(want.file);
  }
  if (want.field !== undefined) expect(e.field).toBe(want.field);
  expect(nativeModelsMade).toBe(before);
  return e;
}

// ---------------------------------------------------------------------------

describe('a good checkpoint loads, fails to load once damaged, and loads again afterwards', () => {
  let goodDir: string;
  let baseline: Float32Array;
  const ids = [1, 17, 42, 99, 5];

  beforeAll(async () => {
    goodDir = good({ seed: 5 });
    const model = await loadModel(goodDir);
    baseline = (await model.forward([ids])).logits;
    model.dispose();
  });

  describe('missing files', () => {
    test('the folder itself does not exist', async () => {
      const dir = path.join(os.tmpdir(), `ngate-no-such-folder-${process.pid}-${Date.now()}`);
      await expectLoadFails(dir, {}, { code: 'ERR_MISSING_FILE', file: dir, reason: /is not a folder/ });
    });

    test('config.json', async () => {
      const dir = good();
      const file = path.join(dir, 'config.json');
      fs.rmSync(file);
      await expectLoadFails(dir, {}, { code: 'ERR_MISSING_FILE', file, reason: /file not found/ });
    });

    test('tokenizer.json', async () => {
      const dir = good();
      const file = path.join(dir, 'tokenizer.json');
      fs.rmSync(file);
      await expectLoadFails(dir, {}, { code: 'ERR_MISSING_FILE', file, reason: /file not found/ });
    });

    test('model.safetensors (and no index)', async () => {
      const dir = good();
      fs.rmSync(path.join(dir, ST));
      const err = await expectLoadFails(dir, {}, { code: 'ERR_MISSING_FILE', file: dir, reason: /no weights/ });
      expect(err.message).toContain(ST);
      expect(err.message).toContain(INDEX);
    });

    test('a shard named in model.safetensors.index.json', async () => {
      const dir = good({ shards: 3 });
      const file = path.join(dir, 'model-00002-of-00003.safetensors');
      fs.rmSync(file);
      const err = await expectLoadFails(dir, {}, { code: 'ERR_MISSING_FILE', file, reason: /does not exist/ });
      expect(err.message).toContain(INDEX);
    });
  });

  describe('truncated or malformed safetensors', () => {
    test('an empty file (a download that never started)', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      fs.truncateSync(file, 0);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /shorter than the 8-byte header length prefix/ });
    });

    test('cut inside the 8-byte length prefix', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      fs.truncateSync(file, 5);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /shorter than the 8-byte header length prefix/ });
    });

    test('cut in the middle of the header', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const { headerLen } = readSt(file);
      fs.truncateSync(file, 8 + Math.floor(headerLen / 2));
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /header length \d+ runs past the end of the file/ });
    });

    test('a header length past the end of the file', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const buf = fs.readFileSync(file);
      buf.writeBigUInt64LE(BigInt(buf.length), 0);
      fs.writeFileSync(file, buf);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /runs past the end of the file/ });
    });

    test('an absurd header length (not a safetensors file)', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const buf = fs.readFileSync(file);
      buf.writeBigUInt64LE(BigInt('0xffffffffffffffff'), 0);
      fs.writeFileSync(file, buf);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /larger than the \d+-byte limit/ });
    });

    test('a header that is not JSON', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const buf = fs.readFileSync(file);
      const headerLen = Number(buf.readBigUInt64LE(0));
      buf.fill(0x20, 8, 8 + headerLen);
      buf.write('{"model.embed_tokens.weight": {"dtype": "F32", oops', 8, 'utf8');
      fs.writeFileSync(file, buf);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /header is not valid JSON/ });
    });

    test('header fine, data cut short in the middle of the tensors', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const { headerLen, data } = readSt(file);
      fs.truncateSync(file, 8 + headerLen + Math.floor(data.length / 2));
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
    });

    test('header fine, no data at all after it', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const { headerLen } = readSt(file);
      fs.truncateSync(file, 8 + headerLen);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
    });

    test('header fine, only the last byte of data missing', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      fs.truncateSync(file, fs.statSync(file).size - 1);
      const err = await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
      expect(err.message).toContain('lm_head.weight');
    });

    test('data_offsets out of range (size right, position past the end)', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const { data } = readSt(file);
      editHeader(file, (h) => {
        const [b, e] = h['lm_head.weight'].data_offsets;
        h['lm_head.weight'].data_offsets = [b + data.length, e + data.length];
      });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
      expect(err.message).toContain('lm_head.weight');
    });

    test('data_offsets reversed', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      editHeader(file, (h) => {
        const [b, e] = h['model.norm.weight'].data_offsets;
        h['model.norm.weight'].data_offsets = [e, b];
      });
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /model\.norm\.weight.*begin \d+ is after end \d+/ });
    });

    test('overlapping data_offsets', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const q = 'model.layers.0.self_attn.q_proj.weight';
      const k = 'model.layers.0.self_attn.k_proj.weight';
      editHeader(file, (h) => {
        const [b, e] = h[q].data_offsets;
        const half = (e - b) / 2;
        expect(h[k].data_offsets[1] - h[k].data_offsets[0]).toBe(e - b); // same size, so only the position is wrong
        h[k].data_offsets = [b + half, e + half];
      });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /overlap/ });
      expect(err.message).toContain(q);
      expect(err.message).toContain(k);
    });

    test('a shape that does not match the byte count', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      editHeader(file, (h) => { h['model.norm.weight'].shape = [33]; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /byte count mismatch/ });
      expect(err.message).toContain('model.norm.weight');
    });

    test('a dtype that does not match the byte count', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      editHeader(file, (h) => { h['model.layers.1.mlp.up_proj.weight'].dtype = 'F16'; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /byte count mismatch/ });
      expect(err.message).toContain('model.layers.1.mlp.up_proj.weight');
    });

    test('an unknown dtype', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      editHeader(file, (h) => { h['model.norm.weight'].dtype = 'F128'; });
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /unknown dtype "F128"/ });
    });

    test('one shard of a sharded checkpoint truncated: the error names that shard', async () => {
      const dir = good({ shards: 3 });
      const file = path.join(dir, 'model-00003-of-00003.safetensors');
      const { headerLen, data } = readSt(file);
      fs.truncateSync(file, 8 + headerLen + Math.floor(data.length / 3));
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
    });
  });

  describe('checkpoint contents that disagree with the model', () => {
    test('a tensor missing from model.safetensors', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const name = 'model.layers.1.mlp.down_proj.weight';
      editHeader(file, (h) => { delete h[name]; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_MISSING_TENSOR', file, reason: /is missing from the checkpoint/ });
      expect(err.message).toContain(name);
    });

    test('a tensor missing from every shard: the error names the index', async () => {
      const dir = good({ shards: 2 });
      const name = 'model.layers.0.self_attn.v_proj.weight';
      const shard = shardOf(dir, name);
      editHeader(shard, (h) => { delete h[name]; });
      editJson(path.join(dir, INDEX), (j) => { delete j.weight_map[name]; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_MISSING_TENSOR', file: path.join(dir, INDEX), reason: /is missing from the checkpoint/ });
      expect(err.message).toContain(name);
    });

    test('an index whose weight_map points at a shard lacking the tensor', async () => {
      const dir = good({ shards: 3 });
      const name = 'model.norm.weight';
      const shard = shardOf(dir, name);
      editHeader(shard, (h) => { delete h[name]; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_MISSING_TENSOR', file: shard, reason: /is not in .*where model\.safetensors\.index\.json places it/ });
      expect(err.message).toContain(name);
      expect(err.message).toContain(path.basename(shard));
    });

    test('a tensor stored in two shards', async () => {
      const dir = good({ shards: 2 });
      const name = 'model.embed_tokens.weight';
      const from = shardOf(dir, name);
      const to = shardOf(dir, 'lm_head.weight');
      expect(to).not.toBe(from);
      const src = readSt(from);
      const dst = readSt(to);
      const e = src.json[name];
      const bytes = src.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      dst.json[name] = { ...e, data_offsets: [dst.data.length, dst.data.length + bytes.length] };
      writeSt(to, dst.json, Buffer.concat([dst.data, bytes]));
      // Whichever shard is read second is the one named, with the other as the first copy.
      const err = await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', reason: /is stored twice/ });
      expect([from, to]).toContain(err.file);
      expect(err.message).toContain(err.file!);
      expect(err.message).toContain(`also in ${path.basename(err.file === from ? to : from)}`);
      expect(err.message).toContain(name);
    });

    test('an index that is not JSON', async () => {
      const dir = good({ shards: 2 });
      const file = path.join(dir, INDEX);
      fs.writeFileSync(file, '{"weight_map": {');
      await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /not valid JSON/ });
    });

    test('an index without a weight_map', async () => {
      const dir = good({ shards: 2 });
      const file = path.join(dir, INDEX);
      editJson(file, (j) => { delete j.weight_map; });
      await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /has no "weight_map" object/ });
    });

    test('an index naming a shard outside the folder', async () => {
      const dir = good({ shards: 2 });
      const file = path.join(dir, INDEX);
      editJson(file, (j) => { j.weight_map['model.norm.weight'] = '../elsewhere.safetensors'; });
      await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /is not a file name in the folder/ });
    });

    test('a tensor whose shape disagrees with config.json (header reshaped, byte count kept)', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const name = 'model.layers.0.self_attn.q_proj.weight';
      editHeader(file, (h) => {
        expect(h[name].shape).toEqual([32, 32]);
        h[name].shape = [16, 64];
      });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /has shape \[16,64\], config\.json implies \[32,32\]/ });
      expect(err.message).toContain(name);
    });

    test('a tensor whose shape disagrees with config.json (config edited)', async () => {
      const dir = good();
      editJson(path.join(dir, 'config.json'), (c) => { c.intermediate_size = 48; });
      const err = await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file: path.join(dir, ST), reason: /has shape \[64,32\], config\.json implies \[48,32\]/ });
      expect(err.message).toContain('model.layers.0.mlp.gate_proj.weight');
    });

    test('a weight stored as I32', async () => {
      const dir = good();
      const file = path.join(dir, ST);
      const name = 'model.layers.1.self_attn.o_proj.weight';
      editHeader(file, (h) => { h[name].dtype = 'I32'; }); // same 4 bytes per element, so the header itself is valid
      const err = await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /has dtype I32; weights must be/ });
      expect(err.message).toContain(name);
    });

    test('a weight stored as BOOL in a shard', async () => {
      const dir = good({ shards: 2 });
      const name = 'model.embed_tokens.weight';
      const file = shardOf(dir, name);
      const { json, data } = readSt(file);
      // BOOL is one byte per element: make a shard whose embed_tokens really is [V, H] bools.
      const e = json[name];
      const n = e.shape.reduce((a, b) => a * b, 1);
      const others = Object.entries(json).filter(([k]) => k !== name && k !== '__metadata__') as [string, HeaderEntry][];
      const out: Record<string, unknown> = { __metadata__: json.__metadata__ };
      const parts: Buffer[] = [];
      let pos = 0;
      for (const [k, v] of others) {
        const bytes = data.subarray(v.data_offsets[0], v.data_offsets[1]);
        out[k] = { ...v, data_offsets: [pos, pos + bytes.length] };
        parts.push(bytes);
        pos += bytes.length;
      }
      out[name] = { dtype: 'BOOL', shape: e.shape, data_offsets: [pos, pos + n] };
      parts.push(Buffer.alloc(n, 1));
      writeSt(file, out, Buffer.concat(parts));
      await expectLoadFails(dir, {}, { code: 'ERR_CHECKPOINT', file, reason: /has dtype BOOL; weights must be/ });
    });
  });

  describe('config.json and tokenizer.json that cannot be used', () => {
    test('an unknown model_type', async () => {
      const dir = good();
      const file = path.join(dir, 'config.json');
      editJson(file, (c) => { c.model_type = 'mistral'; });
      await expectLoadFails(dir, {}, { code: 'ERR_CONFIG', file, field: 'model_type', reason: /unsupported model type "mistral"/ });
    });

    test('config.json that is not JSON', async () => {
      const dir = good();
      const file = path.join(dir, 'config.json');
      fs.writeFileSync(file, '{"model_type": "llama",');
      await expectLoadFails(dir, {}, { code: 'ERR_CONFIG', file, reason: /invalid JSON/ });
    });

    test('tokenizer.json that is not JSON', async () => {
      const dir = good();
      const file = path.join(dir, 'tokenizer.json');
      fs.writeFileSync(file, '{"model": ');
      await expectLoadFails(dir, {}, { code: 'ERR_TOKENIZER', file, reason: /not valid JSON/ });
    });
  });

  describe('load options', () => {
    (cudaPresent ? test.skip : test)('cuda where this build sees no GPU says why and how to get a CUDA build', async () => {
      for (const device of ['cuda', 'cuda:0', 'cuda:3']) {
        await expectLoadFails(goodDir, { device }, {
          code: 'ERR_DEVICE', field: 'device',
          reason: new RegExp(`device ${device} was asked for, but (the addon is built against libtorch .*a CPU-only build.*npx ngate build|.* sees no CUDA GPU)`),
        });
      }
    });

    test('an unknown device', async () => {
      for (const device of ['tpu', 'gpu', 'cuda:x', 'CPU']) {
        const err = await expectLoadFails(goodDir, { device }, { code: 'ERR_DEVICE', field: 'device', reason: /unknown device/ });
        expect(err.message).toContain(`"${device}"`);
      }
    });

    test('an unknown dtype', async () => {
      const err = await expectLoadFails(goodDir, { dtype: 'float64' as ModelDtype }, { code: 'ERR_INPUT', field: 'dtype', reason: /unknown dtype "float64"/ });
      expect(err.message).toMatch(/float32, float16 or bfloat16/);
    });
  });

  describe('after all those failures, in the same process', () => {
    test('no file of a failed load is left open', () => {
      const fdDir = '/proc/self/fd';
      if (!fs.existsSync(fdDir)) return; // Linux only
      const tmp = fs.realpathSync(os.tmpdir());
      const open: string[] = [];
      for (const fd of fs.readdirSync(fdDir)) {
        let target: string;
        try { target = fs.readlinkSync(path.join(fdDir, fd)); } catch { continue; }
        if (made.some((d) => target.startsWith(fs.realpathSync(d) + path.sep)) || target.startsWith(path.join(tmp, 'ngate-load-errors-'))) open.push(target);
      }
      expect(open).toEqual([]);
    });

    test('a good model still loads and gives the same logits as before', async () => {
      const before = nativeModelsMade;
      const model = await loadModel(goodDir);
      expect(nativeModelsMade).toBe(before + 1); // the watch above really sees native loads
      try {
        const { logits, shape } = await model.forward([ids]);
        expect(shape).toEqual([1, ids.length, model.config.vocabSize]);
        expect(Array.from(logits)).toEqual(Array.from(baseline));
        const [g] = await model.generate(['Hello'], { maxNewTokens: 4 });
        expect(g.ids.length + (g.finishReason === 'eos' ? 1 : 0)).toBeGreaterThan(0);
      } finally {
        model.dispose();
      }
    });

    test('a checkpoint repaired in place loads', async () => {
      const dir = good({ seed: 5 });
      const file = path.join(dir, ST);
      const original = fs.readFileSync(file);
      fs.truncateSync(file, original.length - 10);
      await expectLoadFails(dir, {}, { code: 'ERR_SAFETENSORS', file, reason: /past the end of the file/ });
      fs.writeFileSync(file, original);
      const model = await loadModel(dir);
      try {
        expect(Array.from((await model.forward([ids])).logits)).toEqual(Array.from(baseline));
      } finally {
        model.dispose();
      }
    });

    test('several broken loads at once all reject and none disturbs the others', async () => {
      const broken = good();
      fs.truncateSync(path.join(broken, ST), 100);
      const results = await Promise.allSettled([
        loadModel(broken), loadModel(goodDir), loadModel(broken, { device: 'tpu' }), loadModel(goodDir),
      ]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'rejected', 'fulfilled']);
      expect((results[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_SAFETENSORS', file: path.join(broken, ST) });
      expect((results[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_DEVICE' });
      for (const r of results) {
        if (r.status !== 'fulfilled') continue;
        try {
          expect(Array.from((await r.value.forward([ids])).logits)).toEqual(Array.from(baseline));
        } finally {
          r.value.dispose();
        }
      }
    });
  });
});
