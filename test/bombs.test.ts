// Sizes that drive memory come from the input, so each is bounded before
// anything is allocated, with an NgateError that names the limit and how to
// raise it: an image that a resize would blow up, sequences past the model's
// positions, a KV cache sized by maxNewTokens; and a path that is not a
// regular file (a FIFO blocks a read forever, /dev/zero never ends one) is
// refused before it is opened, everywhere a path is read.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { learnMask, loadModel, Model, readPairsFile, readPairsFileSync } from '../lib';
import { main } from '../lib/cli';
import { makeTempDir, writeTinyLlama, writeTinyLlava } from './fixtures/checkpoint';
import { ensureAddon } from '../lib/model/native';

/** Rejects when `p` has not settled within `ms`: a hang fails the test instead of stalling the suite. */
async function within<T>(p: Promise<T>, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`still running after ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string; field?: string; file?: string }> {
  try {
    await within(p);
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe('images', () => {
  let model: Model;
  let work: string;
  beforeAll(async () => {
    work = makeTempDir('ngate-bombs-');
    model = await loadModel(writeTinyLlava(path.join(work, 'llava'), { seed: 2 }).dir);
  });
  afterAll(() => model?.dispose());
  const prompt = async () => (await model.tokenizer.encode('<image>\nWhat is shown?')).ids;

  test('a 276-byte PNG of 60000 × 1 pixels is refused by its aspect ratio, before any resize', async () => {
    const png = await sharp({ create: { width: 60000, height: 1, channels: 3, background: '#888' } }).png().toBuffer();
    expect(png.length).toBeLessThan(2000);
    const file = path.join(work, 'thin.png');
    fs.writeFileSync(file, png);
    const t0 = Date.now();
    const e = await failure(model.forward([await prompt()], { images: [file] }));
    expect(e.code).toBe('ERR_IMAGE');
    expect(e.message).toContain(file);
    expect(e.message).toMatch(/aspect ratio of an image is 60000: 1, past the limit of 50: 1 \(set NGATE_MAX_IMAGE_ASPECT to raise it\)/);
    expect(Date.now() - t0).toBeLessThan(3000);
    const b = await failure(model.generate([await prompt()], { images: [png], maxNewTokens: 2 }));
    expect(b).toMatchObject({ code: 'ERR_IMAGE', field: 'images[0]' });
  });

  test('decoded pixels and sides are bounded, and the limits can be raised', async () => {
    const png = await sharp({ create: { width: 3000, height: 2000, channels: 3, background: '#123' } }).png().toBuffer();
    process.env.NGATE_MAX_IMAGE_PIXELS = '1000000';
    try {
      expect((await failure(model.forward([await prompt()], { images: [png] }))).message).toMatch(/pixels of an image is 6000000 pixels, past the limit of 1000000 pixels \(set NGATE_MAX_IMAGE_PIXELS/);
    } finally {
      delete process.env.NGATE_MAX_IMAGE_PIXELS;
    }
    const ok = await within(model.forward([await prompt()], { images: [png], lastOnly: true }));
    expect(ok.shape[1]).toBe(1);
  });
});

describe('lengths', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(writeTinyLlama(makeTempDir(), { seed: 4, maxPositionEmbeddings: 64 }).dir);
  });
  afterAll(() => model?.dispose());

  test('forward refuses a sequence past max_position_embeddings, naming it, before the addon allocates', async () => {
    const e = await failure(model.forward([[1, 2], new Array(20000).fill(5)]));
    expect(e).toMatchObject({ code: 'ERR_INPUT', field: 'ids[1]' });
    expect(e.message).toMatch(/20000 tokens, past the model's 64 positions/);
  });

  test('maxNewTokens is bounded by the positions left after the prompt (no KV cache sized by it)', async () => {
    const e = await failure(model.generate([[1, 2, 3]], { maxNewTokens: 1e6 }));
    expect(e).toMatchObject({ code: 'ERR_INPUT', field: 'maxNewTokens' });
    expect(e.message).toMatch(/at most 61 new tokens/);
    const [g] = await within(model.generate([[1, 2, 3]], { maxNewTokens: 61 }));
    expect(g!.ids.length).toBeLessThanOrEqual(61);
  });

  test('a 100k-character query, answer or refusal is refused with the pair and field named', async () => {
    const long = 'passport '.repeat(12000);
    const base = { id: 'x', category: 'passport', subject: 'passport', sensitive: 'What is the passport number?', benign: 'What is the passport type?', benignAnswer: 'Blue.' };
    for (const [field, pair] of [
      ['sensitive', { ...base, sensitive: `What is the ${long} number?` }],
      ['benign', { ...base, benignAnswer: long }],
      ['sensitive', { ...base, refusal: `I cannot say. ${long}` }],
      ['benign', { ...base, benignAnswer: undefined, benign: `What is the ${long} type?` }],
    ] as const) {
      const e = await failure(learnMask(model, [pair], { layers: [0], steps: 1 }));
      expect(e).toMatchObject({ code: 'ERR_INPUT', field: `pairs[0].${field}` });
      expect(e.message).toMatch(/past the model's 64 positions/);
    }
  });
});

describe('paths that are not regular files', () => {
  let work: string;
  let fifo: string;
  beforeAll(() => {
    work = makeTempDir('ngate-fifo-');
    fifo = path.join(work, 'pipe.jsonl');
    execFileSync('mkfifo', [fifo]);
  });

  test('a pairs file that is a FIFO or /dev/zero is refused at once', async () => {
    await expect(within(readPairsFile(fifo))).rejects.toMatchObject({ code: 'ERR_PAIRS_FILE', message: expect.stringMatching(/FIFO/) });
    expect(() => readPairsFileSync('/dev/zero')).toThrow(/a device; a regular file is expected/);
  });

  test('a checkpoint whose config.json or weights are a FIFO, and an image that is one, are refused at once', async () => {
    const dir = writeTinyLlama(path.join(work, 'ckpt'), { seed: 1 }).dir;
    const weights = path.join(dir, 'model.safetensors');
    fs.renameSync(weights, weights + '.real');
    execFileSync('mkfifo', [weights]);
    await expect(within(loadModel(dir))).rejects.toMatchObject({ code: 'ERR_SAFETENSORS', message: expect.stringMatching(/FIFO/) });
    fs.rmSync(weights);
    fs.renameSync(weights + '.real', weights);
    fs.renameSync(path.join(dir, 'config.json'), path.join(dir, 'config.real'));
    execFileSync('mkfifo', [path.join(dir, 'config.json')]);
    await expect(within(loadModel(dir))).rejects.toMatchObject({ code: 'ERR_CONFIG', message: expect.stringMatching(/FIFO/) });
    const llava = await loadModel(writeTinyLlava(path.join(work, 'llava'), { seed: 3 }).dir);
    const ids = (await llava.tokenizer.encode('<image>\nHi')).ids;
    await expect(within(llava.forward([ids], { images: [fifo] }))).rejects.toMatchObject({ code: 'ERR_IMAGE', message: expect.stringMatching(/FIFO/) });
    await expect(within(llava.forward([ids], { images: ['/dev/zero'] }))).rejects.toMatchObject({ code: 'ERR_IMAGE', message: expect.stringMatching(/device/) });
    await llava.dispose();
  });

  test('ngate inspect and ngate eval on a FIFO exit 2 at once', async () => {
    let err = '';
    const io = { stdout: { write: () => true }, stderr: { write: (s: string) => { err += s; return true; } } };
    expect(await within(main(['inspect', fifo], io))).toBe(2);
    expect(err).toMatch(/FIFO/);
    expect(await within(main(['eval', '--pairs', fifo], io))).toBe(2);
    expect(await within(main(['inspect', '/dev/zero'], io))).toBe(2);
  });
});

describe('the native tensor reader', () => {
  // lib/model/safetensors.ts refuses a shape whose byte size passes 2^53 (it
  // multiplies in BigInt); native code re-checks every range on its own, so
  // these hand it a spec that skipped that check.
  // Two shapes whose element count wraps in 64 bits: [2^62, 4] to 0 elements
  // (an empty range), and (2^32+1)(2^32-1) twice, = (-1)(-1) = 1 mod 2^64, to
  // one float32 (a 4-byte range) that from_blob would view as 2^128 elements.
  // libtorch 1.13 refuses both too (its own overflow checks, in its words);
  // the reader's check does not rely on them and names the tensor's count.
  test.each([
    ['2^62 x 4', [2 ** 62, 4], 0],
    ['(2^32+1)(2^32-1) twice', [2 ** 32 + 1, 2 ** 32 - 1, 2 ** 32 + 1, 2 ** 32 - 1], 4],
  ])('refuses a shape whose element count overflows 64 bits (%s), naming the tensor and file', async (_, shape, bytes) => {
    const wrapped = { shape: shape as number[], bytes: bytes as number };
    const work = makeTempDir('ngate-bombs-native-');
    const { dir } = writeTinyLlama(path.join(work, 'llama'), { seed: 4 });
    type Spec = { tensors: { name: string; shape: number[]; begin: number; end: number }[] };
    const addon = await ensureAddon();
    const RealNativeModel = addon.NativeModel;
    // The methods of an addon class are read-only: the load of each new
    // instance is shadowed by one that edits the spec on its way in.
    addon.NativeModel = new Proxy(RealNativeModel, {
      construct(target, args) {
        const native = Reflect.construct(target, args) as { load: (spec: Spec, ...rest: unknown[]) => unknown };
        const realLoad = native.load;
        Object.defineProperty(native, 'load', {
          value: (spec: Spec, ...rest: unknown[]) => {
            const t = spec.tensors[0]!;
            spec.tensors[0] = { ...t, shape: wrapped.shape, end: t.begin + wrapped.bytes };
            return realLoad.call(native, spec, ...rest);
          },
        });
        return native;
      },
    });
    try {
      const e = await failure(loadModel(dir));
      expect(e.message).toMatch(/has more elements than 2\^64/);
      expect(e.message).toContain('model.safetensors');
    } finally {
      addon.NativeModel = RealNativeModel;
    }
  });
});
