// Spreading units of work (batches of pairs, layers) over the ranks, the
// parts written as units finish, and gathering every unit's result on every
// rank. A unit's result does not depend on which rank computed it, nor on
// what else that rank computed, so the gathered whole equals a one-process run.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Model } from '../model/model';
import { writeFileAtomic } from '../util/atomic-write';
import type { ProcessGroup } from './process-group';

/**
 * The finished units of one piece of work, one file each, in a folder named
 * after a digest of everything the results depend on (model, pairs,
 * options): a rerun with other inputs never reads them.
 */
export class Parts {
  readonly dir: string;

  constructor(root: string, kind: string, key: unknown) {
    const digest = crypto.createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
    this.dir = path.join(path.resolve(root), `${kind}-${digest}`);
  }

  file(unit: number | string, ext = 'json'): string {
    return path.join(this.dir, `${unit}.${ext}`);
  }

  has(unit: number | string, ext = 'json'): boolean {
    return fs.existsSync(this.file(unit, ext));
  }

  /** The unit's JSON, or null when it is missing or unreadable (then it is computed again). */
  readJson<T>(unit: number | string): T | null {
    try {
      return JSON.parse(fs.readFileSync(this.file(unit), 'utf8')) as T;
    } catch {
      return null;
    }
  }

  writeJson(unit: number | string, value: unknown): void {
    this.ensure();
    writeFileAtomic(this.file(unit), JSON.stringify(value));
  }

  /** Makes the folder (for parts written by other means). */
  ensure(): void {
    fs.mkdirSync(this.dir, { recursive: true });
  }

  /** Removes the folder once the whole result has been written elsewhere. */
  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The parts folder of one piece of work on `model`, or null when there is no
 * folder or the model holds edits made in this process (their weights are
 * known to nobody else, so no part could be matched to them). The model is
 * named by its folder and its weight files' sizes and times: a checkpoint
 * written again in the same folder gets fresh parts.
 */
export function partsFor(root: string | undefined, kind: string, model: Model, key: unknown): Parts | null {
  if (root === undefined || model.editedTensors.size > 0) return null;
  const files = fs.readdirSync(model.dir).filter((f) => f.endsWith('.safetensors')).sort()
    .map((f) => { const st = fs.statSync(path.join(model.dir, f)); return [f, st.size, st.mtimeMs]; });
  return new Parts(root, kind, { model: [model.dir, model.device, model.dtype, files], key });
}

/** Units of work this rank computes (`compute`) and finished ones it contributes from its parts (`load`). */
export interface Assignment { compute: number[]; load: number[] }

/**
 * Which of `count` units this rank does. Without finished parts, rank r takes
 * units r, r + W, r + 2W, … With some (a restarted job), each finished unit is
 * contributed by the lowest rank that holds it, and the unfinished ones are
 * dealt out the same way, so no rank waits for another much longer than one
 * unit takes. `done(u)`: whether this rank holds unit u's part.
 */
export async function assignUnits(count: number, group: ProcessGroup | null | undefined, done: (unit: number) => boolean): Promise<Assignment> {
  const mine: number[] = [];
  for (let u = 0; u < count; u++) if (done(u)) mine.push(u);
  if (!group || group.size === 1) {
    const held = new Set(mine);
    return { compute: [...Array(count).keys()].filter((u) => !held.has(u)), load: mine };
  }
  const owner = new Map<number, number>();
  (await group.gatherJson(mine)).forEach((units, r) => units.forEach((u) => { if (!owner.has(u)) owner.set(u, r); }));
  const remaining = [...Array(count).keys()].filter((u) => !owner.has(u));
  return {
    compute: remaining.filter((_, i) => i % group.size === group.rank),
    load: mine.filter((u) => owner.get(u) === group.rank),
  };
}

/** Every unit's bytes from every rank, on every rank (each unit comes from exactly one rank). */
export async function gatherUnits(group: ProcessGroup | null | undefined, mine: Map<number, Uint8Array>): Promise<Map<number, Uint8Array>> {
  if (!group || group.size === 1) return mine;
  const units = [...mine.keys()];
  const header = new TextEncoder().encode(JSON.stringify(units.map((u) => [u, mine.get(u)!.length])));
  const total = 4 + header.length + units.reduce((s, u) => s + mine.get(u)!.length, 0);
  const packed = new Uint8Array(total);
  new DataView(packed.buffer).setUint32(0, header.length, true);
  packed.set(header, 4);
  let at = 4 + header.length;
  for (const u of units) { packed.set(mine.get(u)!, at); at += mine.get(u)!.length; }
  const out = new Map<number, Uint8Array>();
  for (const p of await group.gatherBytes(packed)) {
    const hlen = new DataView(p.buffer, p.byteOffset, 4).getUint32(0, true);
    const entries = JSON.parse(new TextDecoder().decode(p.subarray(4, 4 + hlen))) as [number, number][];
    let off = 4 + hlen;
    for (const [u, len] of entries) { out.set(u, p.subarray(off, off + len)); off += len; }
  }
  return out;
}

/** Every unit's JSON value from every rank, on every rank. */
export async function gatherUnitsJson<T>(group: ProcessGroup | null | undefined, mine: Map<number, T>): Promise<Map<number, T>> {
  if (!group || group.size === 1) return mine;
  const enc = new TextEncoder(), dec = new TextDecoder();
  const bytes = await gatherUnits(group, new Map([...mine].map(([u, v]) => [u, enc.encode(JSON.stringify(v))])));
  return new Map([...bytes].map(([u, b]) => [u, JSON.parse(dec.decode(b)) as T]));
}
