import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { parseJson } from '../util/json';

export type SafetensorsDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL'
  | 'F8_E4M3' | 'F8_E5M2' | 'U16' | 'U32' | 'U64';

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1, U16: 2, U32: 4, U64: 8,
};

/** One tensor of a file; `begin`/`end` are absolute byte offsets in the file. */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  dataStart: number;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Real headers are a few MB at most; anything larger is corrupt or hostile. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** fs.readSync rejects lengths beyond 2^31 - 1, so large tensors are read in pieces. */
const READ_CHUNK = 1 << 30;

function fail(file: string, reason: string, cause?: unknown): never {
  throw new NgateError('ERR_SAFETENSORS', reason, { file, cause });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDtype(v: unknown): v is SafetensorsDtype {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, v);
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** Byte size of a tensor, or null when it exceeds 2^53 (BigInt so the product cannot silently round). */
function byteSize(dtype: SafetensorsDtype, shape: number[]): number | null {
  let n = BigInt(DTYPE_BYTES[dtype]);
  for (const d of shape) n *= BigInt(d);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : null;
}

function openForRead(file: string): number {
  // Checked before open(), which would block on a FIFO; the header's own checks bound what is read.
  regularFile(file, 'ERR_SAFETENSORS', null);
  try {
    return fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new NgateError('ERR_MISSING_FILE', 'file not found', { file, cause: e });
    }
    fail(file, `cannot open: ${(e as Error).message}`, e);
  }
}

/** Fills `buf` from `position`, looping because readSync may return fewer bytes than asked. Returns bytes read. */
function readFully(fd: number, buf: Uint8Array, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(buf.length - done, READ_CHUNK);
    const n = fs.readSync(fd, buf, done, want, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

/**
 * Reads and validates the header of a safetensors file. Only the first 8 + N
 * bytes are read, so this is cheap even for multi-GB shards.
 */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForRead(file);
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) fail(file, 'not a regular file');
    const fileSize = stat.size;
    if (fileSize < 8) fail(file, `file is ${fileSize} bytes, shorter than the 8-byte header length prefix`);

    const prefix = new Uint8Array(8);
    if (readFully(fd, prefix, 0) < 8) fail(file, 'file ended while reading the 8-byte header length prefix');
    const n64 = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
    if (n64 === BigInt(0)) fail(file, 'header length is 0');
    if (n64 > BigInt(MAX_HEADER_BYTES)) {
      fail(file, `header length ${n64} is larger than the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
    }
    const headerLen = Number(n64);
    const dataStart = 8 + headerLen;
    if (dataStart > fileSize) {
      fail(file, `header length ${headerLen} runs past the end of the file (file is ${fileSize} bytes)`);
    }

    const headerBytes = new Uint8Array(headerLen);
    if (readFully(fd, headerBytes, 8) < headerLen) fail(file, 'file ended while reading the header');

    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch (e) {
      fail(file, 'header is not valid UTF-8', e);
    }
    let json: unknown;
    try {
      json = parseJson(text);
    } catch (e) {
      fail(file, `header is not valid JSON: ${(e as Error).message}`, e);
    }
    if (!isPlainObject(json)) fail(file, `header must be a JSON object, got ${describe(json)}`);

    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(json)) {
      if (name === '__metadata__') {
        metadata = parseMetadata(file, value);
        continue;
      }
      tensors.set(name, parseEntry(file, name, value, dataStart, fileSize));
    }
    checkOverlaps(file, Array.from(tensors.values()));
    return { file, fileSize, dataStart, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

function parseMetadata(file: string, value: unknown): Record<string, string> {
  // The reference implementation treats "__metadata__": null as absent.
  if (value === null) return {};
  if (!isPlainObject(value)) fail(file, `"__metadata__" must be an object of strings, got ${describe(value)}`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') fail(file, `"__metadata__" value for key ${JSON.stringify(k)} must be a string, got ${describe(v)}`);
  }
  // fromEntries defines own properties, so a "__proto__" key stays plain data.
  return Object.fromEntries(Object.entries(value)) as Record<string, string>;
}

function parseEntry(file: string, name: string, value: unknown, dataStart: number, fileSize: number): TensorEntry {
  const t = `tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(value)) fail(file, `${t}: entry must be an object, got ${describe(value)}`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDtype(dtype)) {
    fail(file, `${t}: unknown dtype ${describe(dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!isShape(shape)) fail(file, `${t}: shape must be an array of non-negative integers, got ${describe(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    fail(file, `${t}: data_offsets must be two non-negative integers [begin, end], got ${describe(offsets)}`);
  }
  const [b, e] = offsets as [number, number];
  if (b > e) fail(file, `${t}: data_offsets begin ${b} is after end ${e}`);
  const size = byteSize(dtype, shape);
  if (size === null || size !== e - b) {
    fail(file, `${t}: dtype ${dtype} with shape [${shape.join(', ')}] needs ${size ?? 'more than 2^53'} bytes but data_offsets [${b}, ${e}] span ${e - b} bytes (byte count mismatch)`);
  }
  const begin = dataStart + b;
  const end = dataStart + e;
  if (!Number.isSafeInteger(end) || end > fileSize) {
    fail(file, `${t}: data_offsets [${b}, ${e}] end at byte ${end}, past the end of the file (${fileSize} bytes)`);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

function checkOverlaps(file: string, entries: TensorEntry[]): void {
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const sorted = entries.filter((t) => t.end > t.begin).sort((x, y) => x.begin - y.begin || x.end - y.end);
  let prev: TensorEntry | undefined;
  for (const t of sorted) {
    if (prev && t.begin < prev.end) {
      fail(file, `tensors ${JSON.stringify(prev.name)} (bytes ${prev.begin}..${prev.end}) and ${JSON.stringify(t.name)} (bytes ${t.begin}..${t.end}) overlap`);
    }
    if (!prev || t.end > prev.end) prev = t;
  }
}

function inputError(reason: string): never {
  throw new NgateError('ERR_INPUT', reason);
}

/**
 * Builds the 8-byte length + JSON header for the given tensors, laid out
 * contiguously in the given order. The JSON is padded with spaces so the data
 * starts at a multiple of 8, which keeps every tensor aligned for mmap readers.
 */
export function encodeSafetensorsHeader(
  tensors: { name: string; dtype: SafetensorsDtype; shape: number[] }[],
  metadata?: Record<string, string>,
): { header: Uint8Array; offsets: { name: string; begin: number; end: number }[] } {
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) inputError('safetensors metadata must be an object of strings');
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') inputError(`safetensors metadata value for key ${JSON.stringify(k)} must be a string, got ${describe(v)}`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  const offsets: { name: string; begin: number; end: number }[] = [];
  let pos = 0;
  for (const t of tensors) {
    if (typeof t.name !== 'string' || t.name === '' || t.name === '__metadata__') {
      inputError(`invalid safetensors tensor name ${describe(t.name)}`);
    }
    if (seen.has(t.name)) inputError(`duplicate safetensors tensor name ${JSON.stringify(t.name)}`);
    seen.add(t.name);
    if (!isDtype(t.dtype)) inputError(`tensor ${JSON.stringify(t.name)}: unknown dtype ${describe(t.dtype)}`);
    if (!isShape(t.shape)) inputError(`tensor ${JSON.stringify(t.name)}: shape must be an array of non-negative integers, got ${describe(t.shape)}`);
    const size = byteSize(t.dtype, t.shape);
    if (size === null || !Number.isSafeInteger(pos + size)) inputError(`tensor ${JSON.stringify(t.name)}: total size exceeds 2^53 bytes`);
    offsets.push({ name: t.name, begin: pos, end: pos + size });
    // Built by hand rather than via an object so key order is kept and a "__proto__" name stays a key.
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + size] })}`);
    pos += size;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const header = new Uint8Array(8 + padded);
  Buffer.from(header.buffer).writeBigUInt64LE(BigInt(padded), 0);
  header.set(json, 8);
  header.fill(0x20, 8 + json.length);
  return { header, offsets };
}

/**
 * Writes a whole safetensors file from in-memory tensors. Meant for small
 * files; writes to a temp file in the same folder, fsyncs and renames so a
 * crash never leaves a half-written file under the final name.
 */
export function writeSafetensorsFile(
  file: string,
  tensors: { name: string; dtype: SafetensorsDtype; shape: number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): void {
  const { header, offsets } = encodeSafetensorsHeader(tensors, metadata);
  tensors.forEach((t, i) => {
    const want = offsets[i].end - offsets[i].begin;
    if (!(ArrayBuffer.isView(t.data) && Object.prototype.toString.call(t.data) === '[object Uint8Array]')) inputError(`tensor ${JSON.stringify(t.name)}: data must be a Uint8Array`);
    if (t.data.byteLength !== want) {
      inputError(`tensor ${JSON.stringify(t.name)}: data is ${t.data.byteLength} bytes but dtype ${t.dtype} with shape [${t.shape.join(', ')}] needs ${want}`);
    }
  });

  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx');
    writeAll(fd, header);
    for (const t of tensors) writeAll(fd, t.data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    // A write that fails (a full disk, no permission) is the machine's failure, not bad input: ERR_WRITE.
    throw new NgateError('ERR_WRITE', `cannot write: ${(e as Error).message}`, { file, cause: e });
  }
  // Persist the rename itself; not every platform lets a directory be fsynced, so this is best effort.
  try {
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, Math.min(data.length - done, READ_CHUNK));
  }
}

/** Reads one tensor's bytes into a fresh buffer. */
export function readSafetensorsTensor(file: string, entry: TensorEntry): Uint8Array {
  const { begin, end } = entry;
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin) {
    inputError(`tensor ${JSON.stringify(entry.name)}: invalid byte range ${begin}..${end}`);
  }
  const fd = openForRead(file);
  try {
    const out = new Uint8Array(end - begin);
    const n = readFully(fd, out, begin);
    if (n < out.length) {
      fail(file, `tensor ${JSON.stringify(entry.name)}: file ended after ${n} of ${out.length} bytes (truncated since the header was read?)`);
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
