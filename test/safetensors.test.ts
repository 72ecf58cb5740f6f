import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { NgateError } from '../lib/util/errors';
import {
  DTYPE_BYTES,
  encodeSafetensorsHeader,
  readSafetensorsHeader,
  readSafetensorsTensor,
  writeSafetensorsFile,
} from '../lib/model/safetensors';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

let counter = 0;
function tmpFile(): string {
  return path.join(dir, `t${counter++}.safetensors`);
}

/** Writes a file with a raw header string (no padding) followed by `dataBytes` zero bytes. */
function writeRaw(header: string | Uint8Array, dataBytes: number, lengthOverride?: bigint): string {
  const file = tmpFile();
  const json = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return file;
}

function writeHeader(header: Record<string, unknown>, dataBytes: number): string {
  return writeRaw(JSON.stringify(header), dataBytes);
}

/** Runs fn and returns the NgateError it throws, failing the test if it throws anything else. */
function errorOf(fn: () => unknown): NgateError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NgateError);
    return e as NgateError;
  }
  throw new Error('expected an error');
}

function expectSafetensorsError(file: string, reason: RegExp): NgateError {
  const err = errorOf(() => readSafetensorsHeader(file));
  expect(err.code).toBe('ERR_SAFETENSORS');
  expect(err.file).toBe(file);
  expect(err.message.startsWith(`${file}: `)).toBe(true);
  expect(err.message).toMatch(reason);
  return err;
}

describe('round trip', () => {
  const a = new Uint8Array(Float32Array.from([1, -2, 3.5, 4, 5, 6]).buffer);
  const b = Uint8Array.from([7, 8, 9]);
  const c = new Uint8Array(new Uint16Array([0x3f80, 0x4000]).buffer);
  const tensors = [
    { name: 'model.embed_tokens.weight', dtype: 'F32' as const, shape: [2, 3], data: a },
    { name: 'mask', dtype: 'U8' as const, shape: [3], data: b },
    { name: 'scalar_bf16', dtype: 'BF16' as const, shape: [2], data: c },
    { name: 'empty', dtype: 'F16' as const, shape: [0, 4], data: new Uint8Array(0) },
  ];

  it('reads back the names, dtypes, shapes, offsets, metadata and exact bytes it wrote', () => {
    const file = tmpFile();
    writeSafetensorsFile(file, tensors, { format: 'pt', note: 'ngate' });
    const h = readSafetensorsHeader(file);

    expect(h.file).toBe(file);
    expect(h.fileSize).toBe(fs.statSync(file).size);
    expect(h.metadata).toEqual({ format: 'pt', note: 'ngate' });
    expect(Array.from(h.tensors.keys()).sort()).toEqual(tensors.map((t) => t.name).sort());

    let pos = h.dataStart;
    for (const t of tensors) {
      const e = h.tensors.get(t.name)!;
      expect(e).toEqual({ name: t.name, dtype: t.dtype, shape: t.shape, begin: pos, end: pos + t.data.length });
      expect(Buffer.from(readSafetensorsTensor(file, e))).toEqual(Buffer.from(t.data));
      pos += t.data.length;
    }
    expect(h.fileSize).toBe(pos);
  });

  it('starts the data at a multiple of 8 bytes', () => {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'abcde', 'abcdef', 'abcdefg', 'abcdefgh']) {
      const file = tmpFile();
      writeSafetensorsFile(file, [{ name, dtype: 'U8', shape: [1], data: Uint8Array.of(1) }]);
      expect(readSafetensorsHeader(file).dataStart % 8).toBe(0);
    }
  });

  it('encodes offsets relative to the data start, contiguous in the given order', () => {
    const { header, offsets } = encodeSafetensorsHeader([
      { name: 'x', dtype: 'F32', shape: [2, 2] },
      { name: 'y', dtype: 'I64', shape: [3] },
      { name: 'z', dtype: 'BOOL', shape: [] },
    ]);
    expect(offsets).toEqual([
      { name: 'x', begin: 0, end: 16 },
      { name: 'y', begin: 16, end: 40 },
      { name: 'z', begin: 40, end: 41 },
    ]);
    expect(header.length % 8).toBe(0);
    const n = Number(Buffer.from(header).readBigUInt64LE(0));
    expect(n).toBe(header.length - 8);
    // The padding is spaces, so the header is still plain JSON.
    expect(JSON.parse(Buffer.from(header.subarray(8)).toString('utf8')).y.data_offsets).toEqual([16, 40]);
  });

  it('leaves no temp file behind and replaces an existing file', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'atomic-'));
    const file = path.join(sub, 'out.safetensors');
    fs.writeFileSync(file, 'old contents');
    writeSafetensorsFile(file, [{ name: 'm', dtype: 'U8', shape: [2], data: Uint8Array.of(1, 0) }]);
    expect(fs.readdirSync(sub)).toEqual(['out.safetensors']);
    expect(readSafetensorsHeader(file).tensors.get('m')!.dtype).toBe('U8');
  });

  it('refuses to write data whose length does not match dtype and shape', () => {
    const err = errorOf(() => writeSafetensorsFile(tmpFile(), [{ name: 'm', dtype: 'F32', shape: [2], data: new Uint8Array(7) }]));
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toMatch(/"m".*7 bytes.*needs 8/);
  });

  it('accepts gaps between tensors', () => {
    const file = writeHeader({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [6, 8] } }, 8);
    expect(readSafetensorsHeader(file).tensors.size).toBe(2);
  });

  it('knows the byte size of every dtype', () => {
    expect(DTYPE_BYTES).toMatchObject({ F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1, BOOL: 1, F8_E4M3: 1, U64: 8 });
  });
});

describe('malformed files are rejected with the reason', () => {
  it('missing file', () => {
    const file = path.join(dir, 'does-not-exist.safetensors');
    const err = errorOf(() => readSafetensorsHeader(file));
    expect(err.code).toBe('ERR_MISSING_FILE');
    expect(err.message).toContain(file);
    expect(err.message).toMatch(/not found/);
  });

  it('file shorter than the 8-byte length prefix', () => {
    const file = tmpFile();
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectSafetensorsError(file, /3 bytes, shorter than the 8-byte/);
  });

  it('header length of 0', () => {
    expectSafetensorsError(writeRaw('', 16), /header length is 0/);
  });

  it('header length past the end of the file', () => {
    expectSafetensorsError(writeRaw('{}', 0, BigInt(1000)), /header length 1000 runs past the end of the file/);
  });

  it('absurdly large header length', () => {
    expectSafetensorsError(writeRaw('{}', 0, BigInt('0x8000000000000000')), /larger than the \d+-byte limit/);
  });

  it('header that is not JSON', () => {
    expectSafetensorsError(writeRaw('{"a": {"dtype": "F32",', 0), /not valid JSON/);
  });

  it('header that is not UTF-8', () => {
    expectSafetensorsError(writeRaw(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d), 0), /not valid UTF-8/);
  });

  it('header that is JSON but not an object', () => {
    expectSafetensorsError(writeRaw('[1,2]', 0), /must be a JSON object/);
  });

  it('tensor entry that is not an object', () => {
    expectSafetensorsError(writeHeader({ w: 5 }, 0), /tensor "w": entry must be an object/);
  });

  it('unknown dtype', () => {
    expectSafetensorsError(writeHeader({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16), /tensor "w": unknown dtype "F128"/);
  });

  it('shape that is not non-negative integers', () => {
    expectSafetensorsError(writeHeader({ w: { dtype: 'U8', shape: [2, -1], data_offsets: [0, 0] } }, 0), /tensor "w": shape must be/);
    expectSafetensorsError(writeHeader({ w: { dtype: 'U8', shape: [1.5], data_offsets: [0, 0] } }, 0), /tensor "w": shape must be/);
  });

  it('data_offsets that are not two integers, or begin after end', () => {
    expectSafetensorsError(writeHeader({ w: { dtype: 'U8', shape: [1], data_offsets: [0] } }, 1), /tensor "w": data_offsets must be two/);
    expectSafetensorsError(writeHeader({ w: { dtype: 'U8', shape: [1], data_offsets: ['0', 1] } }, 1), /tensor "w": data_offsets must be two/);
    expectSafetensorsError(writeHeader({ w: { dtype: 'U8', shape: [0], data_offsets: [4, 2] } }, 4), /tensor "w": data_offsets begin 4 is after end 2/);
  });

  it('dtype and shape whose byte count differs from the offsets', () => {
    expectSafetensorsError(
      writeHeader({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 24),
      /tensor "w": dtype F32 with shape \[2, 3\] needs 24 bytes but data_offsets \[0, 20\] span 20 bytes/,
    );
  });

  it('offsets past the end of the file', () => {
    expectSafetensorsError(writeHeader({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8), /tensor "w".*past the end of the file/);
  });

  it('overlapping tensors', () => {
    const file = writeHeader(
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
        c: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
      },
      20,
    );
    expectSafetensorsError(file, /tensors "a" .* and "c" .* overlap/);
  });

  it('__metadata__ that is not an object of strings', () => {
    expectSafetensorsError(writeHeader({ __metadata__: { format: 1 } }, 0), /"__metadata__" value for key "format" must be a string/);
    expectSafetensorsError(writeHeader({ __metadata__: ['pt'] }, 0), /"__metadata__" must be an object/);
  });

  it('file truncated after the header was read', () => {
    const file = tmpFile();
    writeSafetensorsFile(file, [{ name: 'w', dtype: 'F32', shape: [4], data: new Uint8Array(16) }]);
    const entry = readSafetensorsHeader(file).tensors.get('w')!;
    fs.truncateSync(file, entry.begin + 5);
    const err = errorOf(() => readSafetensorsTensor(file, entry));
    expect(err.code).toBe('ERR_SAFETENSORS');
    expect(err.message).toMatch(/tensor "w": file ended after 5 of 16 bytes/);
  });
});
