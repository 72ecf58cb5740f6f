// The neural gate (eq. 6) built from learned masks, exact merging of gates from
// sharded mask runs, and the files both are kept in.
import type { ProcessGroup } from '../dist/process-group';
import { NgateError } from '../util/errors';
import { warn, WarningCallback } from '../util/warnings';
import { writeFileAtomic } from '../util/atomic-write';
import { readSafetensorsHeader, readSafetensorsTensor, writeSafetensorsFile } from '../model/safetensors';
import type { SafetensorsDtype, SafetensorsHeader } from '../model/safetensors';
import type { Gate, GateLayerCounts, MaskLoss, MaskSet } from '../../types/results';
import { parseJson } from '../util/json';

// By tag, not instanceof: arrays made by the addon or another realm (a vm
// context, a worker) have their own constructors.
function isTyped(v: unknown, tag: 'Float32Array' | 'Uint8Array' | 'Uint32Array'): boolean {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === `[object ${tag}]`;
}

/** τ of section 3.3: dimensions with M_l[j] > 0.3 are strongly active and pass the gate. */
export const DEFAULT_GATE_THRESHOLD = 0.3;

export interface BuildGateOptions {
  /** τ in [0, 1]; default 0.3 as in the paper. */
  threshold?: number;
  /** Where warnings go (default: Node's process warnings). */
  onWarning?: WarningCallback;
  /**
   * Pool the masks of every rank of this group: each rank passes its own
   * shard (possibly none), the negative counts and pair counts are summed
   * over the ranks as int64 — the exact merge of mergeGates — and every rank
   * gets the gate of all the pairs. Then buildGate returns a promise.
   */
  group?: ProcessGroup;
}

const GATE_FORMAT = 'ngate.gate';
const MASKS_FORMAT = 'ngate.masks';
const FORMAT_VERSION = '1';
/** negative_counts is stored as I32. */
const MAX_I32 = 0x7fffffff;

function inputError(reason: string, field?: string): never {
  throw new NgateError('ERR_INPUT', reason, field === undefined ? {} : { field });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------------------
// Validation shared by building, merging and saving.

/** Problems with a value, reported by the caller against its own field or file. */
function layersProblem(v: unknown): string | null {
  if (!Array.isArray(v) || v.length === 0) return 'must be a non-empty array of layer indices';
  for (const l of v) {
    if (!Number.isSafeInteger(l) || (l as number) < 0) return `must hold non-negative integers, got ${JSON.stringify(l)}`;
  }
  if (new Set(v).size !== v.length) return `must not repeat a layer, got [${v.join(', ')}]`;
  return null;
}

function hiddenSizeProblem(v: unknown): string | null {
  return Number.isSafeInteger(v) && (v as number) > 0 ? null : `must be a positive integer, got ${JSON.stringify(v)}`;
}

function thresholdProblem(v: unknown): string | null {
  return typeof v === 'number' && v >= 0 && v <= 1 ? null : `τ must be a number in [0, 1], got ${JSON.stringify(v)}`;
}

function pairIdsProblem(v: unknown): string | null {
  if (!Array.isArray(v)) return 'must be an array of strings';
  const seen = new Set<string>();
  for (const id of v) {
    if (typeof id !== 'string') return `must hold strings, got ${JSON.stringify(id)}`;
    if (seen.has(id)) return `pair id ${JSON.stringify(id)} appears twice`;
    seen.add(id);
  }
  return null;
}

/** Checks one MaskSet's shapes; `field` names a field the way the caller's user will recognise it. */
function checkMaskSet(ms: MaskSet, field: (name: string) => string): void {
  if (!isPlainObject(ms)) inputError('expected a MaskSet object');
  let p = layersProblem(ms.layers);
  if (p) inputError(p, field('layers'));
  p = hiddenSizeProblem(ms.hiddenSize);
  if (p) inputError(p, field('hiddenSize'));
  p = pairIdsProblem(ms.pairIds);
  if (p) inputError(p, field('pairIds'));
  const want = ms.pairIds.length * ms.layers.length * ms.hiddenSize;
  if (!(isTyped(ms.masks, 'Float32Array'))) inputError('must be a Float32Array', field('masks'));
  if (ms.masks.length !== want) {
    inputError(`has ${ms.masks.length} values; [pairs ${ms.pairIds.length}, layers ${ms.layers.length}, hiddenSize ${ms.hiddenSize}] needs ${want}`, field('masks'));
  }
  if (!Array.isArray(ms.losses) || ms.losses.length !== ms.pairIds.length) {
    inputError(`must hold one entry per pair (${ms.pairIds.length})`, field('losses'));
  }
  ms.losses.forEach((l, i) => {
    if (!isPlainObject(l) || typeof l.sensitive !== 'number' || typeof l.benign !== 'number' || typeof l.l1 !== 'number') {
      inputError('must be { sensitive, benign, l1 } numbers', field(`losses[${i}]`));
    }
  });
  if (ms.hookPoint !== undefined && ms.hookPoint !== 'ffn' && ms.hookPoint !== 'block') {
    inputError(`must be "ffn" or "block", got ${JSON.stringify(ms.hookPoint)}`, field('hookPoint'));
  }
  if (ms.options !== undefined && !isPlainObject(ms.options)) inputError('must be an object', field('options'));
}

/** Checks a gate's scalar fields and array lengths (not that share/keep agree: see checkAgreement). */
function checkGateShape(g: Gate, field: (name: string) => string): void {
  if (!isPlainObject(g)) inputError('expected a Gate object');
  let p = layersProblem(g.layers);
  if (p) inputError(p, field('layers'));
  p = hiddenSizeProblem(g.hiddenSize);
  if (p) inputError(p, field('hiddenSize'));
  p = thresholdProblem(g.threshold);
  if (p) inputError(p, field('threshold'));
  if (!Number.isSafeInteger(g.pairCount) || g.pairCount < 1) inputError(`must be a positive integer, got ${JSON.stringify(g.pairCount)}`, field('pairCount'));
  const n = g.layers.length * g.hiddenSize;
  if (!(isTyped(g.share, 'Float32Array')) || g.share.length !== n) inputError(`must be a Float32Array of ${n} values [layers, hiddenSize]`, field('share'));
  if (!(isTyped(g.keep, 'Uint8Array')) || g.keep.length !== n) inputError(`must be a Uint8Array of ${n} values [layers, hiddenSize]`, field('keep'));
  if (g.negativeCounts !== undefined && (!(isTyped(g.negativeCounts, 'Uint32Array')) || g.negativeCounts.length !== n)) {
    inputError(`must be a Uint32Array of ${n} values [layers, hiddenSize]`, field('negativeCounts'));
  }
  if (g.pairIds !== undefined) {
    p = pairIdsProblem(g.pairIds);
    if (p) inputError(p, field('pairIds'));
    if (g.pairIds.length !== g.pairCount) inputError(`has ${g.pairIds.length} ids but pairCount is ${g.pairCount}`, field('pairIds'));
  }
}

// ---------------------------------------------------------------------------
// Eq. 6 from integer counts.

/**
 * The whole gate from per-dimension counts of pairs with m < 0. Building and
 * merging both end here, so a merged gate and a gate built from all masks at
 * once are the same bits.
 */
export function gateFromCounts(layers: number[], hiddenSize: number, threshold: number, pairCount: number, negativeCounts: Uint32Array, pairIds?: string[]): Gate {
  const n = layers.length * hiddenSize;
  const share = new Float32Array(n);
  const keep = new Uint8Array(n);
  const counts: GateLayerCounts[] = [];
  for (let li = 0; li < layers.length; li++) {
    let inactive = 0, weak = 0, strong = 0;
    for (let j = li * hiddenSize; j < (li + 1) * hiddenSize; j++) {
      const neg = negativeCounts[j];
      // Eq. 6: M_l[j] = (1/N) Σ_i 1[m_l^i[j] < 0]. The class is decided on the
      // double ratio, not on the float32 kept in `share`: fround(0.3) > 0.3, so
      // a dimension with M exactly τ (3 of 10 pairs) would otherwise count as strong.
      const m = neg / pairCount;
      share[j] = m;
      if (neg === 0) inactive++;
      else if (m > threshold) { strong++; keep[j] = 1; }
      else weak++;
    }
    counts.push({
      layer: layers[li], inactive, weak, strong,
      inactiveShare: inactive / hiddenSize, weakShare: weak / hiddenSize, strongShare: strong / hiddenSize,
    });
  }
  const gate: Gate = { layers: [...layers], hiddenSize, threshold, pairCount, share, keep, counts, negativeCounts };
  if (pairIds !== undefined) gate.pairIds = pairIds;
  return gate;
}

/**
 * Builds the neural gate M_l (eq. 6) of every layer from learned masks.
 * Several MaskSets (shards of one run) are pooled as if they were one: they
 * must share layers and hiddenSize, and no pair may appear twice. Dimensions
 * are inactive (M = 0), weakly active (0 < M ≤ τ) or strongly active (M > τ);
 * `keep` is M > τ, the gate of eq. 7.
 */
export function buildGate(masks: MaskSet | MaskSet[], opts?: BuildGateOptions & { group?: undefined }): Gate;
export function buildGate(masks: MaskSet | MaskSet[], opts: BuildGateOptions & { group: ProcessGroup }): Promise<Gate>;
export function buildGate(masks: MaskSet | MaskSet[], opts: BuildGateOptions = {}): Gate | Promise<Gate> {
  if (opts.group) return buildGateAcrossRanks(masks, opts.threshold, opts.group).then((g) => warnEmptyLayers(g, opts.onWarning));
  return warnEmptyLayers(buildGateHere(masks, opts.threshold), opts.onWarning);
}

function warnEmptyLayers(gate: Gate, onWarning: WarningCallback | undefined): Gate {
  for (const c of gate.counts) {
    if (c.strong === 0) {
      warn(onWarning, 'NGATE_EMPTY_GATE_LAYER', `layer ${c.layer} has no strongly active neuron (no dimension with M_l > τ = ${gate.threshold}; ` +
        `${c.weak} weakly active): a gated edit of it passes no gradient from subject positions. ` +
        'Lower τ, or learn the masks with more steps or a larger learning rate so that they cross zero');
    }
  }
  return gate;
}

function buildGateHere(masks: MaskSet | MaskSet[], thresholdOpt: number | undefined): Gate {
  const many = Array.isArray(masks);
  const sets = many ? masks : [masks];
  const field = (i: number) => (name: string) => (many ? `masks[${i}].${name}` : name);
  if (sets.length === 0) inputError('expected at least one MaskSet', 'masks');
  const threshold = thresholdOpt ?? DEFAULT_GATE_THRESHOLD;
  const tp = thresholdProblem(threshold);
  if (tp) inputError(tp, 'threshold');
  sets.forEach((s, i) => checkMaskSet(s, field(i)));

  const { layers, hiddenSize } = sets[0];
  const owner = new Map<string, number>();
  sets.forEach((s, i) => {
    if (!sameList(s.layers, layers)) inputError(`is [${s.layers.join(', ')}] but masks[0] has [${layers.join(', ')}]; all MaskSets must cover the same layers in the same order`, field(i)('layers'));
    if (s.hiddenSize !== hiddenSize) inputError(`is ${s.hiddenSize} but masks[0] has ${hiddenSize}`, field(i)('hiddenSize'));
    for (const id of s.pairIds) {
      const prev = owner.get(id);
      if (prev !== undefined) inputError(`pair id ${JSON.stringify(id)} is also in masks[${prev}]; a pair must be counted once`, field(i)('pairIds'));
      owner.set(id, i);
    }
  });
  const pairCount = owner.size;
  if (pairCount === 0) inputError('no pairs: eq. 6 averages over N ≥ 1 masks', many ? 'masks' : 'pairIds');
  if (pairCount > 0xffffffff) inputError(`${pairCount} pairs is more than a Uint32 count holds`, 'pairIds');

  const stride = layers.length * hiddenSize;
  const negativeCounts = new Uint32Array(stride);
  sets.forEach((s, si) => {
    const m = s.masks;
    for (let p = 0; p < s.pairIds.length; p++) {
      const base = p * stride;
      for (let k = 0; k < stride; k++) {
        const v = m[base + k];
        if (v < 0) negativeCounts[k]++;
        // NaN has no sign: it means the mask run diverged, and counting it as "not negative" would hide that.
        else if (v !== v) inputError(`pair ${JSON.stringify(s.pairIds[p])} has NaN at layer ${layers[Math.floor(k / hiddenSize)]}, dim ${k % hiddenSize}`, field(si)('masks'));
      }
    }
  });
  const pairIds = sets.flatMap((s) => s.pairIds);
  return gateFromCounts(layers, hiddenSize, threshold, pairCount, negativeCounts, pairIds);
}

/**
 * buildGate over the shards of every rank. A problem found on one rank is
 * reported on every rank (naming the rank), so that no rank is left waiting
 * in a collective the others never reach.
 */
async function buildGateAcrossRanks(masks: MaskSet | MaskSet[], thresholdOpt: number | undefined, group: ProcessGroup): Promise<Gate> {
  const sets = Array.isArray(masks) ? masks : [masks];
  let local: Gate | null = null;
  let problem: string | null = null;
  try {
    if (sets.length > 0) local = buildGateHere(masks, thresholdOpt);
    else {
      const tp = thresholdProblem(thresholdOpt ?? DEFAULT_GATE_THRESHOLD);
      if (tp) inputError(tp, 'threshold');
    }
  } catch (e) {
    problem = (e as Error).message;
  }
  type Shard = { problem: string | null; layers?: number[]; hiddenSize?: number; threshold?: number; pairIds?: string[] };
  const shards = await group.gatherJson<Shard>(local
    ? { problem, layers: local.layers, hiddenSize: local.hiddenSize, threshold: local.threshold, pairIds: local.pairIds }
    : { problem });
  const bad = shards.findIndex((s) => s.problem !== null);
  if (bad >= 0) inputError(`rank ${bad}: ${shards[bad].problem}`, 'masks');
  const first = shards.findIndex((s) => s.layers !== undefined);
  if (first < 0) inputError('no rank has any masks: eq. 6 averages over N ≥ 1 masks', 'masks');
  const ref = shards[first];
  const owner = new Map<string, number>();
  shards.forEach((s, r) => {
    if (s.layers === undefined) return;
    if (!sameList(s.layers, ref.layers!)) inputError(`rank ${r}'s masks cover layers [${s.layers.join(', ')}] but rank ${first}'s [${ref.layers!.join(', ')}]`, 'masks');
    if (s.hiddenSize !== ref.hiddenSize) inputError(`rank ${r}'s masks have hiddenSize ${s.hiddenSize} but rank ${first}'s ${ref.hiddenSize}`, 'masks');
    if (s.threshold !== ref.threshold) inputError(`rank ${r} builds with τ = ${s.threshold} but rank ${first} with ${ref.threshold}`, 'threshold');
    for (const id of s.pairIds!) {
      const prev = owner.get(id);
      if (prev !== undefined) {
        inputError(`pair id ${JSON.stringify(id)} is in the masks of rank ${prev} and of rank ${r}; with a group, each rank passes its own shard ` +
          '(learnMask with a group already returns every mask: build the gate from it without the group)', 'masks');
      }
      owner.set(id, r);
    }
  });
  const n = ref.layers!.length * ref.hiddenSize!;
  // int64, not int32: torch has no uint32, and a sum of int32 counts could overflow.
  const counts = new BigInt64Array(n + 1);
  if (local) {
    for (let k = 0; k < n; k++) counts[k] = BigInt(local.negativeCounts![k]);
    counts[n] = BigInt(local.pairCount);
  }
  const sum = await group.allreduce(counts, 'sum');
  const pairCount = Number(sum[n]);
  if (pairCount > 0xffffffff) inputError(`${pairCount} pairs in all is more than a Uint32 count holds`, 'masks');
  const negativeCounts = new Uint32Array(n);
  for (let k = 0; k < n; k++) negativeCounts[k] = Number(sum[k]);
  return gateFromCounts(ref.layers!, ref.hiddenSize!, ref.threshold!, pairCount, negativeCounts, shards.flatMap((s) => s.pairIds ?? []));
}

/**
 * The per-dimension count of pairs with m < 0. Gates made here carry it; for
 * one that does not, it is read back from share × pairCount and accepted only
 * if it reproduces share exactly (always so below 2^24 pairs).
 */
function negativeCountsOf(g: Gate, field: (name: string) => string): Uint32Array {
  if (g.negativeCounts !== undefined) {
    for (let k = 0; k < g.negativeCounts.length; k++) {
      if (g.negativeCounts[k] > g.pairCount) inputError(`count ${g.negativeCounts[k]} at index ${k} exceeds pairCount ${g.pairCount}`, field('negativeCounts'));
    }
    return g.negativeCounts;
  }
  const out = new Uint32Array(g.share.length);
  const exact = g.pairCount < 1 << 24;
  for (let k = 0; k < out.length; k++) {
    const n = Math.round(g.share[k] * g.pairCount);
    if (!exact || !(n >= 0 && n <= g.pairCount) || Math.fround(n / g.pairCount) !== g.share[k]) {
      inputError(`the gate has no negativeCounts and share[${k}] = ${g.share[k]} is not a count out of ${g.pairCount} pairs; rebuild it with buildGate`, field('negativeCounts'));
    }
    out[k] = n;
  }
  return out;
}

/**
 * Merges gates built from disjoint sets of pairs of the same model into the
 * gate of all pairs: negative counts and pair counts add, and M_l is the
 * pooled ratio. The result is bit-identical to buildGate over all the masks.
 */
export function mergeGates(gates: Gate[]): Gate {
  if (!Array.isArray(gates) || gates.length === 0) inputError('expected a non-empty array of gates', 'gates');
  const field = (i: number) => (name: string) => `gates[${i}].${name}`;
  gates.forEach((g, i) => checkGateShape(g, field(i)));
  const { layers, hiddenSize, threshold } = gates[0];
  gates.forEach((g, i) => {
    if (!sameList(g.layers, layers)) inputError(`is [${g.layers.join(', ')}] but gates[0] has [${layers.join(', ')}]`, field(i)('layers'));
    if (g.hiddenSize !== hiddenSize) inputError(`is ${g.hiddenSize} but gates[0] has ${hiddenSize}`, field(i)('hiddenSize'));
    if (g.threshold !== threshold) inputError(`is ${g.threshold} but gates[0] has ${threshold}; merge gates built with the same τ`, field(i)('threshold'));
  });

  // Pair ids are only known when every gate has them; then a pair counted twice is caught.
  let pairIds: string[] | undefined;
  if (gates.every((g) => g.pairIds !== undefined)) {
    const owner = new Map<string, number>();
    gates.forEach((g, i) => {
      for (const id of g.pairIds!) {
        const prev = owner.get(id);
        if (prev !== undefined) inputError(`pair id ${JSON.stringify(id)} is also in gates[${prev}]; a pair must be counted once`, field(i)('pairIds'));
        owner.set(id, i);
      }
    });
    pairIds = gates.flatMap((g) => g.pairIds!);
  }

  const pairCount = gates.reduce((s, g) => s + g.pairCount, 0);
  if (pairCount > 0xffffffff) inputError(`${pairCount} pairs in all is more than a Uint32 count holds`, 'gates');
  const negativeCounts = new Uint32Array(layers.length * hiddenSize);
  gates.forEach((g, i) => {
    const c = negativeCountsOf(g, field(i));
    for (let k = 0; k < c.length; k++) negativeCounts[k] += c[k];
  });
  return gateFromCounts(layers, hiddenSize, threshold, pairCount, negativeCounts, pairIds);
}

// ---------------------------------------------------------------------------
// Files. Typed arrays are written as their in-memory bytes: safetensors is
// little-endian, as is every platform libtorch ships for.

function bytesOf(a: Float32Array | Uint8Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** `<file minus .safetensors>.json`, where saveGate writes the human-readable summary. */
export function gateSummaryFile(file: string): string {
  return file.endsWith('.safetensors') ? file.slice(0, -'.safetensors'.length) + '.json' : file + '.json';
}


/**
 * Saves a gate as safetensors (`share` F32, `keep` U8, `negative_counts` I32,
 * all [L, d]; layers, threshold, pairCount, hiddenSize and, when known,
 * pairIds as JSON metadata) and a JSON summary with the per-layer counts next
 * to it (see gateSummaryFile).
 */
export function saveGate(gate: Gate, file: string): void {
  if (typeof file !== 'string' || file === '') inputError('must be a non-empty path', 'file');
  const field = (name: string) => name;
  checkGateShape(gate, field);
  if (gate.pairCount > MAX_I32) inputError(`${gate.pairCount} pairs do not fit the I32 negative_counts tensor`, 'pairCount');
  const neg = negativeCountsOf(gate, field);
  checkAgreement(gate, neg, (reason, f) => inputError(reason, f));

  const L = gate.layers.length, d = gate.hiddenSize;
  const metadata: Record<string, string> = {
    format: GATE_FORMAT,
    version: FORMAT_VERSION,
    layers: JSON.stringify(gate.layers),
    threshold: JSON.stringify(gate.threshold),
    pairCount: JSON.stringify(gate.pairCount),
    hiddenSize: JSON.stringify(d),
  };
  if (gate.pairIds !== undefined) metadata.pairIds = JSON.stringify(gate.pairIds);
  writeSafetensorsFile(file, [
    { name: 'share', dtype: 'F32', shape: [L, d], data: bytesOf(gate.share) },
    { name: 'keep', dtype: 'U8', shape: [L, d], data: bytesOf(gate.keep) },
    { name: 'negative_counts', dtype: 'I32', shape: [L, d], data: bytesOf(Int32Array.from(neg)) },
  ], metadata);

  const counts = gateFromCounts(gate.layers, d, gate.threshold, gate.pairCount, neg).counts;
  const summary = { format: GATE_FORMAT, layers: gate.layers, hiddenSize: d, threshold: gate.threshold, pairCount: gate.pairCount, counts };
  writeFileAtomic(gateSummaryFile(file), JSON.stringify(summary, null, 2) + '\n');
}

/**
 * share and keep must be what eq. 6 gives for the counts; a file whose tensors
 * disagree has been corrupted or edited by hand (safetensors has no checksum).
 */
function checkAgreement(g: Gate, neg: Uint32Array, fail: (reason: string, field: string) => never): void {
  const d = g.hiddenSize;
  for (let k = 0; k < neg.length; k++) {
    const m = neg[k] / g.pairCount;
    const where = `layer ${g.layers[Math.floor(k / d)]}, dim ${k % d}`;
    if (!Object.is(g.share[k], Math.fround(m))) fail(`${where}: share ${g.share[k]} is not ${neg[k]}/${g.pairCount}`, 'share');
    if (g.keep[k] !== (m > g.threshold ? 1 : 0)) fail(`${where}: keep ${g.keep[k]} disagrees with M = ${neg[k]}/${g.pairCount} and τ = ${g.threshold}`, 'keep');
  }
}

/** Reads one metadata value as JSON, failing with the file and key. */
function metaJson(header: SafetensorsHeader, key: string, fail: (reason: string, field: string) => never): unknown {
  const raw = header.metadata[key];
  if (raw === undefined) fail('missing from the metadata', key);
  try {
    return parseJson(raw);
  } catch (e) {
    fail(`metadata is not valid JSON: ${(e as Error).message}`, key);
  }
}

function checkFormat(header: SafetensorsHeader, want: string, fail: (reason: string, field: string) => never): void {
  const got = header.metadata.format;
  if (got !== undefined && got !== want) fail(`is ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`, 'format');
  const version = header.metadata.version;
  if (version !== undefined && version !== FORMAT_VERSION) fail(`version ${JSON.stringify(version)} is not supported (this library reads ${FORMAT_VERSION})`, 'version');
}

/** Reads a tensor after checking its dtype and shape, failing with the file and tensor name. */
function readTensor(header: SafetensorsHeader, name: string, dtype: SafetensorsDtype, shape: number[], fail: (reason: string, field: string) => never): Uint8Array {
  const entry = header.tensors.get(name);
  if (!entry) fail('tensor is missing', name);
  if (entry.dtype !== dtype) fail(`dtype is ${entry.dtype}, expected ${dtype}`, name);
  if (!sameList(entry.shape, shape)) fail(`shape is [${entry.shape.join(', ')}], expected [${shape.join(', ')}]`, name);
  const bytes = readSafetensorsTensor(header.file, entry);
  // A fresh buffer starts at offset 0, so typed views over it are aligned.
  return bytes.byteOffset === 0 ? bytes : bytes.slice();
}

type Failer = (reason: string, field: string) => never;

function fileFailer(code: 'ERR_GATE_FILE' | 'ERR_MASK_FILE', file: string): Failer {
  return (reason, field) => {
    throw new NgateError(code, reason, { file, field });
  };
}

/** Loads a gate written by saveGate; every tensor and metadata field is checked against the others. */
export function loadGate(file: string): Gate {
  const fail: Failer = fileFailer('ERR_GATE_FILE', file);
  const header = readSafetensorsHeader(file);
  checkFormat(header, GATE_FORMAT, fail);
  const layers = metaJson(header, 'layers', fail);
  let p = layersProblem(layers);
  if (p) fail(p, 'layers');
  const hiddenSize = metaJson(header, 'hiddenSize', fail);
  p = hiddenSizeProblem(hiddenSize);
  if (p) fail(p, 'hiddenSize');
  const threshold = metaJson(header, 'threshold', fail);
  p = thresholdProblem(threshold);
  if (p) fail(p, 'threshold');
  const pairCount = metaJson(header, 'pairCount', fail);
  if (!Number.isSafeInteger(pairCount) || (pairCount as number) < 1 || (pairCount as number) > MAX_I32) {
    fail(`must be a positive integer, got ${JSON.stringify(pairCount)}`, 'pairCount');
  }
  let pairIds: string[] | undefined;
  if (header.metadata.pairIds !== undefined) {
    const ids = metaJson(header, 'pairIds', fail);
    p = pairIdsProblem(ids);
    if (p) fail(p, 'pairIds');
    if ((ids as string[]).length !== pairCount) fail(`has ${(ids as string[]).length} ids but pairCount is ${pairCount}`, 'pairIds');
    pairIds = ids as string[];
  }

  const L = (layers as number[]).length, d = hiddenSize as number, n = L * d;
  const share = new Float32Array(readTensor(header, 'share', 'F32', [L, d], fail).buffer, 0, n);
  const keep = readTensor(header, 'keep', 'U8', [L, d], fail);
  const negI32 = new Int32Array(readTensor(header, 'negative_counts', 'I32', [L, d], fail).buffer, 0, n);
  const negativeCounts = new Uint32Array(n);
  for (let k = 0; k < n; k++) {
    const c = negI32[k];
    if (c < 0 || c > (pairCount as number)) fail(`count ${c} at index ${k} is outside [0, pairCount ${pairCount}]`, 'negative_counts');
    negativeCounts[k] = c;
  }

  const gate = gateFromCounts(layers as number[], d, threshold as number, pairCount as number, negativeCounts, pairIds);
  checkAgreement({ ...gate, share, keep }, negativeCounts, fail);
  return gate;
}

/**
 * Saves learned masks as safetensors: `masks` F32 [N, L, d] and `losses` F32
 * [N, 3] (sensitive, benign, l1); layers, pairIds, hiddenSize, hookPoint and
 * options as JSON metadata. Losses are stored as float32, the precision the
 * native loop computes them in.
 */
export function saveMasks(maskSet: MaskSet, file: string): void {
  if (typeof file !== 'string' || file === '') inputError('must be a non-empty path', 'file');
  checkMaskSet(maskSet, (name) => name);
  const N = maskSet.pairIds.length, L = maskSet.layers.length, d = maskSet.hiddenSize;
  const losses = new Float32Array(N * 3);
  maskSet.losses.forEach((l, i) => {
    losses[3 * i] = l.sensitive;
    losses[3 * i + 1] = l.benign;
    losses[3 * i + 2] = l.l1;
  });
  const metadata: Record<string, string> = {
    format: MASKS_FORMAT,
    version: FORMAT_VERSION,
    layers: JSON.stringify(maskSet.layers),
    pairIds: JSON.stringify(maskSet.pairIds),
    hiddenSize: JSON.stringify(d),
  };
  if (maskSet.hookPoint !== undefined) metadata.hookPoint = JSON.stringify(maskSet.hookPoint);
  if (maskSet.options !== undefined) {
    try {
      metadata.options = JSON.stringify(maskSet.options);
    } catch (e) {
      inputError(`cannot be stored as JSON: ${(e as Error).message}`, 'options');
    }
  }
  writeSafetensorsFile(file, [
    { name: 'masks', dtype: 'F32', shape: [N, L, d], data: bytesOf(maskSet.masks) },
    { name: 'losses', dtype: 'F32', shape: [N, 3], data: bytesOf(losses) },
  ], metadata);
}

/** Loads masks written by saveMasks. */
export function loadMasks(file: string): MaskSet {
  const fail: Failer = fileFailer('ERR_MASK_FILE', file);
  const header = readSafetensorsHeader(file);
  checkFormat(header, MASKS_FORMAT, fail);
  const layers = metaJson(header, 'layers', fail);
  let p = layersProblem(layers);
  if (p) fail(p, 'layers');
  const hiddenSize = metaJson(header, 'hiddenSize', fail);
  p = hiddenSizeProblem(hiddenSize);
  if (p) fail(p, 'hiddenSize');
  const pairIds = metaJson(header, 'pairIds', fail);
  p = pairIdsProblem(pairIds);
  if (p) fail(p, 'pairIds');
  let hookPoint: 'ffn' | 'block' | undefined;
  if (header.metadata.hookPoint !== undefined) {
    const h = metaJson(header, 'hookPoint', fail);
    if (h !== 'ffn' && h !== 'block') fail(`must be "ffn" or "block", got ${JSON.stringify(h)}`, 'hookPoint');
    hookPoint = h;
  }
  let options: Record<string, unknown> | undefined;
  if (header.metadata.options !== undefined) {
    const o = metaJson(header, 'options', fail);
    if (!isPlainObject(o)) fail('must be a JSON object', 'options');
    options = o;
  }

  const N = (pairIds as string[]).length, L = (layers as number[]).length, d = hiddenSize as number;
  const masks = new Float32Array(readTensor(header, 'masks', 'F32', [N, L, d], fail).buffer, 0, N * L * d);
  const raw = new Float32Array(readTensor(header, 'losses', 'F32', [N, 3], fail).buffer, 0, N * 3);
  const losses: MaskLoss[] = [];
  for (let i = 0; i < N; i++) losses.push({ sensitive: raw[3 * i], benign: raw[3 * i + 1], l1: raw[3 * i + 2] });

  const out: MaskSet = { layers: layers as number[], hiddenSize: d, pairIds: pairIds as string[], masks, losses };
  if (hookPoint !== undefined) out.hookPoint = hookPoint;
  if (options !== undefined) out.options = options;
  return out;
}
