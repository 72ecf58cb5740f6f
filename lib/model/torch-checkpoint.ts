// Reading PyTorch's `torch.save` files (`.pth`, `pytorch_model-*.bin`)
// without executing any pickle: the zip archive (`<prefix>/data.pkl`,
// `<prefix>/data/<key>`, `<prefix>/version`) is read through its central
// directory, and data.pkl by a pickle interpreter that builds only the values
// `torch.load(weights_only=True)` allows. Tensors are not read here: each one
// is described by the absolute byte range of its storage in the file, so that
// the addon maps it from disk (a multi-GB file is never held in memory twice).
import * as fs from 'fs';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { DTYPE_BYTES, SafetensorsDtype } from './safetensors';

/** A reference to a global the pickle named (the allowed ones only ever). */
export class PickleGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string { return `${this.module}.${this.name}`; }
}

/** A storage of the archive: `<prefix>/data/<key>`, `numel` elements of `dtype`. */
export class TorchStorage {
  constructor(readonly key: string, readonly dtype: SafetensorsDtype, readonly numel: number, readonly location: string,
    readonly begin: number, readonly end: number) {}
}

/** A tensor as `_rebuild_tensor_v2` describes it: a view of a storage. */
export class TorchTensor {
  constructor(readonly storage: TorchStorage, readonly offset: number, readonly shape: number[], readonly stride: number[],
    readonly requiresGrad: boolean) {}
  get dtype(): SafetensorsDtype { return this.storage.dtype; }
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }
  /** Row-major and dense, so its bytes are one range of the file. */
  get contiguous(): boolean {
    let expect = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.stride[d] !== expect) return false;
      expect *= this.shape[d];
    }
    return true;
  }
  /** Absolute byte range of the tensor's values (contiguous tensors only). */
  get begin(): number { return this.storage.begin + this.offset * DTYPE_BYTES[this.dtype]; }
  get end(): number { return this.begin + this.numel * DTYPE_BYTES[this.dtype]; }
}

/** A pickled dict (`dict` or `collections.OrderedDict`), keys in order. */
export class PickleDict {
  readonly entries = new Map<unknown, unknown>();
  constructor(readonly ordered: boolean) {}
}

export type PickleValue = null | boolean | number | bigint | string | Uint8Array | PickleValue[] | PickleDict
  | PickleGlobal | TorchStorage | TorchTensor;

export interface TorchCheckpoint {
  file: string;
  /** The archive's folder name: the file stem for torch.save, "archive" for others. */
  prefix: string;
  /** Every global the pickle names, as "module.name". */
  globals: string[];
  root: PickleValue;
  /** Every tensor reachable from the root, by its dotted key path ("model.llama_proj.weight"). */
  tensors: Map<string, TorchTensor>;
}

// The globals torch.load(weights_only=True) accepts that a state dict, an
// optimizer, a GradScaler or a training config can hold.
const STORAGE_DTYPES: Record<string, SafetensorsDtype> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};
const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', '_codecs.encode',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

function fail(file: string, reason: string): never {
  throw new NgateError('ERR_CHECKPOINT', reason, { file });
}

// ---------------------------------------------------------------------------
// The zip container. Written by hand: torch stores every record uncompressed,
// and what the addon needs is each record's absolute offset in the file, which
// stream-oriented zip readers do not hand out.

interface ZipEntry { name: string; method: number; size: number; compressedSize: number; localOffset: number; }

const MAX_CENTRAL_DIRECTORY = 64 * 1024 * 1024;

function readAt(fd: number, file: string, pos: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, pos + got);
    if (n === 0) fail(file, `ends early: ${length} bytes expected at offset ${pos}, the file is truncated`);
    got += n;
  }
  return buf;
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;  // then fails a bounds check
  return Number(v);
}

function readZipDirectory(fd: number, file: string, size: number): ZipEntry[] {
  // End of central directory: 22 bytes plus a comment of up to 65535.
  const tailLength = Math.min(size, 22 + 65535 + 20);
  const tail = readAt(fd, file, size - tailLength, tailLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) fail(file, 'is not a zip archive (no end-of-central-directory record): a truncated file, or not a torch.save file');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // Zip64: the locator sits just before the classic record.
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) fail(file, 'zip64 archive without its locator record');
    const at = u64(tail, loc + 8);
    if (at + 56 > size) fail(file, 'zip64 end-of-central-directory record lies outside the file');
    const rec = readAt(fd, file, at, 56);
    if (rec.readUInt32LE(0) !== 0x06064b50) fail(file, 'bad zip64 end-of-central-directory record');
    count = u64(rec, 32);
    cdSize = u64(rec, 40);
    cdOffset = u64(rec, 48);
  }
  if (cdOffset + cdSize > size) fail(file, 'its zip directory lies outside the file: the file is truncated');
  if (cdSize > MAX_CENTRAL_DIRECTORY) fail(file, `its zip directory is ${cdSize} bytes, more than a checkpoint's can be`);
  const cd = readAt(fd, file, cdOffset, cdSize);
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) fail(file, `zip directory entry ${i} is damaged`);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let entrySize = cd.readUInt32LE(p + 24);
    const nameLength = cd.readUInt16LE(p + 28), extraLength = cd.readUInt16LE(p + 30), commentLength = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    if (p + 46 + nameLength + extraLength + commentLength > cd.length) fail(file, `zip directory entry ${i} is damaged`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
    // Zip64 sizes and offset live in extra field 0x0001, in this order, for those that overflowed.
    let e = p + 46 + nameLength;
    const extraEnd = e + extraLength;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e), len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        const take = (): number => { if (q + 8 > e + 4 + len) fail(file, `zip64 field of ${name} is short`); const v = u64(cd, q); q += 8; return v; };
        if (entrySize === 0xffffffff) entrySize = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localOffset === 0xffffffff) localOffset = take();
      }
      e += 4 + len;
    }
    entries.push({ name, method, size: entrySize, compressedSize, localOffset });
    p += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/** Absolute [begin, end) of a stored (uncompressed) record's bytes. */
function recordRange(fd: number, file: string, size: number, entry: ZipEntry): [number, number] {
  if (entry.method !== 0) fail(file, `record ${entry.name} is compressed (method ${entry.method}); torch.save never compresses, so this is not a torch.save file`);
  if (entry.localOffset + 30 > size) fail(file, `record ${entry.name} lies outside the file: the file is truncated`);
  const head = readAt(fd, file, entry.localOffset, 30);
  if (head.readUInt32LE(0) !== 0x04034b50) fail(file, `record ${entry.name} has no local header where the directory says`);
  const begin = entry.localOffset + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
  const end = begin + entry.size;
  if (end > size) fail(file, `record ${entry.name} lies outside the file: the file is truncated`);
  return [begin, end];
}

// ---------------------------------------------------------------------------
// The pickle interpreter.

// Bounds on data.pkl. A checkpoint's pickle describes its tensors: ~15
// instructions and ~100 bytes each, so a 70B model with its optimizer state
// stays under a megabyte and 10^5 instructions. Without a bound, two-byte
// instructions (EMPTY_LIST, APPEND) build ~60 bytes of heap each: a 1 GiB
// pickle would ask for 30 GB.
const MAX_PICKLE = 256 * 1024 * 1024;
const MAX_PICKLE_OPS = 4_000_000;
const MARK = Symbol('mark');
type StackItem = PickleValue | typeof MARK;

function decodeLatin1(bytes: Uint8Array): string { return Buffer.from(bytes).toString('latin1'); }

// A tuple key (torch writes none, but a pickle may) as text; a self-containing one is not expanded.
function keyText(k: PickleValue): string {
  try {
    return JSON.stringify(k, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    return '[a self-referencing key]';
  }
}

interface PickleContext {
  file: string;
  storage(key: string, dtype: SafetensorsDtype, numel: number, location: string): TorchStorage;
  globals: Set<string>;
}

/** Reads one pickle, allowing only what `torch.load(weights_only=True)` allows; never runs anything. */
export function unpickle(data: Uint8Array, ctx: PickleContext): PickleValue {
  const { file } = ctx;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PickleValue>();
  let p = 0;
  const need = (n: number): void => { if (p + n > buf.length) fail(file, 'data.pkl ends in the middle of an instruction'); };
  const u8 = (): number => { need(1); return buf[p++]; };
  const u16 = (): number => { need(2); const v = buf.readUInt16LE(p); p += 2; return v; };
  const u32 = (): number => { need(4); const v = buf.readUInt32LE(p); p += 4; return v; };
  const i32 = (): number => { need(4); const v = buf.readInt32LE(p); p += 4; return v; };
  const bytes = (n: number): Uint8Array => { need(n); const v = buf.subarray(p, p + n); p += n; return v; };
  const line = (): string => {
    const nl = buf.indexOf(0x0a, p);
    if (nl < 0) fail(file, 'data.pkl ends in the middle of an instruction');
    const s = buf.toString('latin1', p, nl);
    p = nl + 1;
    return s;
  };
  const pop = (): PickleValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) fail(file, 'data.pkl pops from an empty stack');
    return v as PickleValue;
  };
  const popMark = (): PickleValue[] => {
    const m = marks.pop();
    if (m === undefined) fail(file, 'data.pkl pops a mark it never set');
    const items = stack.splice(m) as StackItem[];
    if (items[0] !== MARK) fail(file, 'data.pkl has an unbalanced mark');
    return items.slice(1) as PickleValue[];
  };
  const top = (): PickleValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) fail(file, 'data.pkl refers to an empty stack');
    return v as PickleValue;
  };
  const long = (raw: Uint8Array): number | bigint => {
    if (raw.length === 0) return 0;
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]);
    if (raw[raw.length - 1] & 0x80) v -= 1n << BigInt(8 * raw.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const global = (module: string, name: string): PickleGlobal => {
    const q = `${module}.${name}`;
    ctx.globals.add(q);
    if (!ALLOWED_GLOBALS.has(q)) {
      fail(file, `data.pkl asks for the global ${q}, which a checkpoint may not use (allowed: dicts, lists, tuples, numbers, strings, tensors and their storages); nothing was run`);
    }
    return new PickleGlobal(module, name);
  };
  const setItem = (d: PickleValue, k: PickleValue, v: PickleValue): void => {
    if (!(d instanceof PickleDict)) fail(file, 'data.pkl sets an item on something that is not a dict');
    d.entries.set(Array.isArray(k) || k instanceof PickleDict ? keyText(k) : k, v);
  };
  const reduce = (fn: PickleValue, args: PickleValue): PickleValue => {
    if (!(fn instanceof PickleGlobal)) fail(file, 'data.pkl calls something that is not an allowed global');
    if (!Array.isArray(args)) fail(file, `data.pkl calls ${fn.qualified} without an argument tuple`);
    switch (fn.qualified) {
      case 'collections.OrderedDict':
        if (args.length !== 0) fail(file, 'data.pkl builds an OrderedDict from arguments, which torch.save never writes');
        return new PickleDict(true);
      case 'torch._utils._rebuild_tensor_v2': {
        const [storage, offset, size, stride, requiresGrad] = args;
        if (!(storage instanceof TorchStorage)) fail(file, '_rebuild_tensor_v2 without a storage');
        const ints = (v: PickleValue, what: string): number[] => {
          if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0)) fail(file, `_rebuild_tensor_v2 with a bad ${what}`);
          return v as number[];
        };
        const shape = ints(size, 'size'), strides = ints(stride, 'stride');
        if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) fail(file, '_rebuild_tensor_v2 with a bad storage offset');
        if (shape.length !== strides.length) fail(file, '_rebuild_tensor_v2: size and stride differ in length');
        // The last element the view touches must lie inside its storage.
        const numel = shape.reduce((a, b) => a * b, 1);
        const last = numel === 0 ? 0 : offset + shape.reduce((a, s, i) => a + (s - 1) * strides[i], 0) + 1;
        if (last > storage.numel) fail(file, `a tensor of shape [${shape}] reaches past the end of its storage ${storage.key}`);
        return new TorchTensor(storage, offset, shape, strides, requiresGrad === true);
      }
      case 'torch._utils._rebuild_parameter': {
        const [data] = args;
        if (!(data instanceof TorchTensor)) fail(file, '_rebuild_parameter without a tensor');
        return data;
      }
      case '_codecs.encode': {
        const [text] = args;
        if (typeof text !== 'string') fail(file, '_codecs.encode without a string');
        return Uint8Array.from(Buffer.from(text, 'latin1'));
      }
      default:
        fail(file, `data.pkl calls ${fn.qualified}, which is a type, not a function`);
    }
  };

  for (let ops = 1; ; ops++) {
    if (ops > MAX_PICKLE_OPS) fail(file, `data.pkl runs more than ${MAX_PICKLE_OPS} instructions; a checkpoint's describes its tensors in a few per tensor`);
    const op = u8();
    switch (op) {
      case 0x80: u8(); break;                                    // PROTO
      case 0x95: bytes(8); break;                                // FRAME
      case 0x2e: {                                               // STOP
        const v = pop();
        return v;
      }
      case 0x28: marks.push(stack.length); stack.push(MARK); break;  // MARK
      case 0x30: pop(); break;                                   // POP
      case 0x31: popMark(); break;                               // POP_MARK
      case 0x32: stack.push(top()); break;                       // DUP
      case 0x4e: stack.push(null); break;                        // NONE
      case 0x88: stack.push(true); break;                        // NEWTRUE
      case 0x89: stack.push(false); break;                       // NEWFALSE
      case 0x4a: stack.push(i32()); break;                       // BININT
      case 0x4b: stack.push(u8()); break;                        // BININT1
      case 0x4d: stack.push(u16()); break;                       // BININT2
      case 0x8a: stack.push(long(bytes(u8()))); break;           // LONG1
      case 0x8b: {                                               // LONG4
        const n = i32();
        if (n < 0) fail(file, 'data.pkl has a negative length');
        stack.push(long(bytes(n)));
        break;
      }
      case 0x49: {                                               // INT (protocol 0; also True/False)
        const s = line();
        if (s === '01') stack.push(true);
        else if (s === '00') stack.push(false);
        else { const v = Number(s); if (!Number.isSafeInteger(v)) fail(file, `data.pkl has a bad INT ${JSON.stringify(s)}`); stack.push(v); }
        break;
      }
      case 0x4c: {                                               // LONG (protocol 0)
        const s = line().replace(/L$/, '');
        if (!/^-?\d+$/.test(s)) fail(file, 'data.pkl has a bad LONG');
        const v = BigInt(s);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: { need(8); stack.push(buf.readDoubleBE(p)); p += 8; break; }  // BINFLOAT
      case 0x46: {                                               // FLOAT (protocol 0)
        const v = Number(line());
        if (Number.isNaN(v)) fail(file, 'data.pkl has a bad FLOAT');
        stack.push(v);
        break;
      }
      case 0x58: stack.push(Buffer.from(bytes(u32())).toString('utf8')); break;  // BINUNICODE
      default:
        p -= 1;
        if (!otherOpcode()) fail(file, `data.pkl uses pickle opcode 0x${op.toString(16)}, which a checkpoint does not need`);
    }
  }

  // The rest of the opcodes, kept apart so that the main switch stays readable.
  function otherOpcode(): boolean {
    const op = u8();
    switch (op) {
      case 0x8c: stack.push(Buffer.from(bytes(u8())).toString('utf8')); return true;   // SHORT_BINUNICODE
      case 0x8d: {                                                                    // BINUNICODE8
        need(8); const n = u64(buf, p); p += 8;
        stack.push(Buffer.from(bytes(n)).toString('utf8'));
        return true;
      }
      case 0x55: stack.push(decodeLatin1(bytes(u8()))); return true;                  // SHORT_BINSTRING
      case 0x54: { const n = i32(); if (n < 0) fail(file, 'data.pkl has a negative length'); stack.push(decodeLatin1(bytes(n))); return true; }  // BINSTRING
      case 0x43: stack.push(Uint8Array.from(bytes(u8()))); return true;               // SHORT_BINBYTES
      case 0x42: stack.push(Uint8Array.from(bytes(u32()))); return true;              // BINBYTES
      case 0x5d: stack.push([]); return true;                                         // EMPTY_LIST
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l)) fail(file, 'data.pkl appends to something that is not a list'); l.push(v); return true; }  // APPEND
      case 0x65: { const items = popMark(); const l = top(); if (!Array.isArray(l)) fail(file, 'data.pkl appends to something that is not a list'); l.push(...items); return true; }  // APPENDS
      case 0x6c: stack.push(popMark()); return true;                                  // LIST
      case 0x29: stack.push([]); return true;                                         // EMPTY_TUPLE
      case 0x74: stack.push(popMark()); return true;                                  // TUPLE
      case 0x85: { const a = pop(); stack.push([a]); return true; }                   // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push([a, b]); return true; }     // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push([a, b, c]); return true; }  // TUPLE3
      case 0x7d: stack.push(new PickleDict(false)); return true;                      // EMPTY_DICT
      case 0x64: {                                                                    // DICT
        const items = popMark();
        if (items.length % 2) fail(file, 'data.pkl builds a dict from an odd number of items');
        const d = new PickleDict(false);
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        stack.push(d);
        return true;
      }
      case 0x73: { const v = pop(), k = pop(); setItem(top(), k, v); return true; }   // SETITEM
      case 0x75: {                                                                    // SETITEMS
        const items = popMark();
        if (items.length % 2) fail(file, 'data.pkl sets an odd number of dict items');
        const d = top();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        return true;
      }
      case 0x68: stack.push(getMemo(u8())); return true;                              // BINGET
      case 0x6a: stack.push(getMemo(u32())); return true;                             // LONG_BINGET
      case 0x67: stack.push(getMemo(Number(line()))); return true;                    // GET
      case 0x71: memo.set(u8(), top()); return true;                                  // BINPUT
      case 0x72: memo.set(u32(), top()); return true;                                 // LONG_BINPUT
      case 0x70: memo.set(Number(line()), top()); return true;                        // PUT
      case 0x94: memo.set(memo.size, top()); return true;                             // MEMOIZE
      case 0x63: { const module = line(); const name = line(); stack.push(global(module, name)); return true; }  // GLOBAL
      case 0x93: {                                                                    // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(file, 'data.pkl names a global with something other than strings');
        stack.push(global(module, name));
        return true;
      }
      case 0x52: { const args = pop(), fn = pop(); stack.push(reduce(fn, args)); return true; }  // REDUCE
      case 0x81: {                                                                    // NEWOBJ
        const args = pop(), cls = pop();
        if (cls instanceof PickleGlobal && cls.qualified === 'collections.OrderedDict') { stack.push(reduce(cls, args)); return true; }
        fail(file, `data.pkl instantiates ${cls instanceof PickleGlobal ? cls.qualified : 'an object'}, which a checkpoint may not do`);
        return true;
      }
      case 0x62: {                                                                    // BUILD
        const state = pop();
        const obj = top();
        // torch.load(weights_only=True) lets a state dict's OrderedDict keep attributes
        // (its `_metadata`) and a tensor its Python attributes; neither changes a value.
        if (!(obj instanceof PickleDict || obj instanceof TorchTensor) || !(state instanceof PickleDict || state === null || Array.isArray(state))) {
          fail(file, 'data.pkl sets the state of an object, which a checkpoint may only do for a dict or a tensor');
        }
        return true;
      }
      case 0x51: {                                                                    // BINPERSID
        const pid = pop();
        if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== 'storage') fail(file, 'data.pkl refers to a persistent object that is not a storage');
        const [, type, key, location, numel] = pid;
        if (!(type instanceof PickleGlobal) || !(type.module === 'torch' && type.name in STORAGE_DTYPES)) fail(file, 'a storage of an unknown type');
        if (typeof key !== 'string' || typeof location !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
          fail(file, 'a storage reference with a bad key, location or size');
        }
        stack.push(ctx.storage(key, STORAGE_DTYPES[type.name], numel, location));
        return true;
      }
      default:
        return false;
    }
  }

  function getMemo(i: number): PickleValue {
    if (!memo.has(i)) fail(file, `data.pkl reads memo entry ${i}, which it never wrote`);
    return memo.get(i)!;
  }
}

// ---------------------------------------------------------------------------

function checkNotLegacy(fd: number, file: string, size: number): void {
  if (size < 4) fail(file, `is ${size} bytes long: not a torch.save file (or a truncated one)`);
  const head = readAt(fd, file, 0, Math.min(size, 262));
  if (head.readUInt32LE(0) === 0x04034b50) return;
  // The pre-1.6 format is a bare pickle stream (protocol 2) and old ones a tar file.
  if (head[0] === 0x80 || head.toString('latin1', 257, 262) === 'ustar') {
    fail(file, 'is in the legacy (non-zip) torch.save format, which is read only by executing its pickle; resave it once with '
      + `python -c "import torch; torch.save(torch.load('OLD', weights_only=True), 'NEW')" (PyTorch >= 1.13) and load NEW`);
  }
  fail(file, 'is not a torch.save file (not a zip archive)');
}

/** Reads the archive's directory and data.pkl; tensor bytes stay in the file. */
export function readTorchCheckpoint(file: string): TorchCheckpoint {
  let fd: number;
  regularFile(file, 'ERR_CHECKPOINT', null);  // before open(), which would block on a FIFO
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NgateError('ERR_MISSING_FILE', 'file not found', { file, cause: e });
    throw new NgateError('ERR_CHECKPOINT', `cannot read: ${(e as Error).message}`, { file, cause: e });
  }
  try {
    const size = fs.fstatSync(fd).size;
    checkNotLegacy(fd, file, size);
    const entries = readZipDirectory(fd, file, size);
    const pkls = entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (pkls.length !== 1) fail(file, pkls.length === 0 ? 'has no <name>/data.pkl record: not a torch.save archive' : 'has several data.pkl records');
    const prefix = pkls[0].name.slice(0, -'/data.pkl'.length);
    const byName = new Map(entries.map((e) => [e.name, e]));
    if (pkls[0].size > MAX_PICKLE) fail(file, `its data.pkl is ${pkls[0].size} bytes, more than a checkpoint's can be`);
    const [pb, pe] = recordRange(fd, file, size, pkls[0]);
    const pickle = readAt(fd, file, pb, pe - pb);
    const storages = new Map<string, TorchStorage>();
    const globals = new Set<string>();
    const root = unpickle(pickle, {
      file, globals,
      storage(key, dtype, numel, location) {
        const prev = storages.get(key);
        if (prev) {
          if (prev.dtype !== dtype) fail(file, `storage ${key} is used with two dtypes (${prev.dtype}, ${dtype})`);
          return prev;
        }
        const entry = byName.get(`${prefix}/data/${key}`);
        if (!entry) fail(file, `record ${prefix}/data/${key} (a tensor's storage) is missing: the file is truncated or damaged`);
        const [begin, end] = recordRange(fd, file, size, entry);
        const bytes = numel * DTYPE_BYTES[dtype];
        if (end - begin < bytes) fail(file, `storage ${key} holds ${end - begin} bytes, ${bytes} expected: the file is truncated or damaged`);
        const s = new TorchStorage(key, dtype, numel, location, begin, begin + bytes);
        storages.set(key, s);
        return s;
      },
    });
    return { file, prefix, globals: [...globals].sort(), root, tensors: collectTensors(root, file) };
  } finally {
    fs.closeSync(fd);
  }
}

// Containers nested deeper than this are refused rather than walked (a state dict nests 3 or 4 deep).
const MAX_DEPTH = 256;

function collectTensors(root: PickleValue, file: string): Map<string, TorchTensor> {
  const out = new Map<string, TorchTensor>();
  const seen = new Set<object>();  // shared or cyclic containers are walked once
  const walk = (v: PickleValue, name: string, depth: number): void => {
    if (depth > MAX_DEPTH) fail(file, `data.pkl nests containers more than ${MAX_DEPTH} deep, which no checkpoint does`);
    if (v instanceof TorchTensor) { if (!out.has(name)) out.set(name, v); return; }
    if (v instanceof PickleDict) {
      if (seen.has(v)) return;
      seen.add(v);
      for (const [k, x] of v.entries) walk(x as PickleValue, name === '' ? String(k) : `${name}.${String(k)}`, depth + 1);
    } else if (Array.isArray(v)) {
      if (seen.has(v)) return;
      seen.add(v);
      v.forEach((x, i) => walk(x, name === '' ? String(i) : `${name}.${i}`, depth + 1));
    }
  };
  walk(root, '', 0);
  return out;
}

/** The value at `key` of a pickled dict, or undefined. */
export function dictGet(d: PickleValue, key: string): PickleValue | undefined {
  return d instanceof PickleDict ? (d.entries.get(key) as PickleValue | undefined) : undefined;
}

/** The tensors of a state dict (a dict of name → tensor) at `path` of the root ([] for the root itself). */
export function stateDict(ckpt: TorchCheckpoint, path: string[] = []): Map<string, TorchTensor> {
  let v: PickleValue | undefined = ckpt.root;
  for (const k of path) {
    const next = dictGet(v, k);
    if (next === undefined) fail(ckpt.file, `has no "${path.slice(0, path.indexOf(k) + 1).join('.')}" entry${v instanceof PickleDict ? ` (it holds: ${[...v.entries.keys()].slice(0, 8).map(String).join(', ')})` : ''}`);
    v = next;
  }
  if (!(v instanceof PickleDict)) fail(ckpt.file, `${path.length ? `"${path.join('.')}"` : 'its top level'} is not a state dict`);
  const out = new Map<string, TorchTensor>();
  for (const [k, x] of v.entries) if (typeof k === 'string' && x instanceof TorchTensor) out.set(k, x);
  return out;
}
