// A checkpoint folder written whole or not at all, also across a crash: it is
// written into a hidden temporary folder beside the target, then renamed into
// place. Replacing an existing folder takes two renames (target → old, temporary
// → target), and a kill between them would leave the target missing; so a
// small journal beside the target records the swap first, and the next save or
// load of that target finishes it (the temporary folder is complete once the
// journal exists). Temporary folders of ours whose process is gone are removed.
import * as fs from 'fs';
import * as path from 'path';

const TMP = /^\.(.+)\.ngate-tmp-(\d+)-[0-9a-z]+(-old)?$/;

/** A fresh temporary folder name beside `target`, ours by its name. */
export function tempFolderFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.ngate-tmp-${process.pid}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`);
}

/** The journal of a swap into `target` (present only while one is under way, or was interrupted). */
export function journalFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.ngate-swap.json`);
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

function syncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  } catch { /* not every platform lets a folder be fsynced: best effort */ }
}

/**
 * Moves the finished folder `tmp` to `target`, replacing what is there. The
 * journal is written (and synced) before the first rename and removed after
 * the last step, so that recoverSwap can finish a swap a crash interrupted.
 */
export function swapInto(tmp: string, target: string): void {
  if (!fs.existsSync(target)) {
    fs.renameSync(tmp, target);
    syncDir(path.dirname(target));
    return;
  }
  const old = `${tmp}-old`;
  const journal = journalFor(target);
  const record = path.join(path.dirname(target), `.${path.basename(journal)}.${process.pid}.tmp`);
  fs.writeFileSync(record, JSON.stringify({ target: path.basename(target), tmp: path.basename(tmp), old: path.basename(old) }) + '\n');
  fs.renameSync(record, journal);
  syncDir(path.dirname(target));
  fs.renameSync(target, old);
  fs.renameSync(tmp, target);
  syncDir(path.dirname(target));
  fs.rmSync(old, { recursive: true, force: true });
  fs.rmSync(journal, { force: true });
}

/**
 * Finishes a swap into `target` that a crash interrupted, if its journal is
 * there: the new folder goes into place (or stays there) and the old one is
 * removed. Returns what it did, or null when there was nothing to do.
 */
export function recoverSwap(target: string): 'finished' | 'cleaned' | null {
  const journal = journalFor(target);
  let rec: { tmp?: unknown; old?: unknown };
  try {
    rec = JSON.parse(fs.readFileSync(journal, 'utf8')) as { tmp?: unknown; old?: unknown };
  } catch {
    return null;  // no journal (or one half-written, whose swap never began)
  }
  const dir = path.dirname(target);
  const name = (v: unknown) => (typeof v === 'string' && TMP.test(v) ? path.join(dir, v) : null);
  const tmp = name(rec.tmp), old = name(rec.old);
  if (!tmp || !old) return null;
  let did: 'finished' | 'cleaned' = 'cleaned';
  if (fs.existsSync(tmp)) {
    // The new folder is complete (the journal is written after it): put it in place.
    if (fs.existsSync(target) && !fs.existsSync(old)) fs.renameSync(target, old);
    if (!fs.existsSync(target)) { fs.renameSync(tmp, target); did = 'finished'; }
  }
  fs.rmSync(old, { recursive: true, force: true });
  fs.rmSync(journal, { force: true });
  syncDir(dir);
  return did;
}

/** Removes temporary folders of ours in `dir` whose process is gone (and no journal names); returns their names. */
export function removeStaleTemps(dir: string): string[] {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const journaled = new Set<string>();
  for (const n of names.filter((x) => x.endsWith('.ngate-swap.json'))) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8')) as { tmp?: string; old?: string };
      if (r.tmp) journaled.add(r.tmp);
      if (r.old) journaled.add(r.old);
    } catch { /* unreadable: names nothing */ }
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = TMP.exec(n);
    if (!m || journaled.has(n) || alive(Number(m[2]))) continue;
    fs.rmSync(path.join(dir, n), { recursive: true, force: true });
    removed.push(n);
  }
  return removed;
}
