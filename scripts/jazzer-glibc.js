// Jazzer.js 4.0.0 ships one Linux x64 fuzzing engine (libFuzzer in a Node
// addon), linked on a newer system than Debian 12: it asks glibc 2.38 for two
// functions (__isoc23_strtol/__isoc23_strtoul, the C23 spellings of strtol
// and strtoul) and libstdc++'s GLIBCXX_3.4.32 for one symbol it names but
// never calls (GCC 13's std::ios_base_library_init, no relocation uses it).
// Debian 12 has glibc 2.36 and GLIBCXX_3.4.30, so the addon fails to load.
// Building it from source needs LLVM's sources from the network, so this
// writes a copy beside the original in which the two functions are bound to
// strtoimax/strtoumax@GLIBC_2.2.5 (same signature and result on LP64; the
// C23 ones only add the 0b prefix) and the two versions are marked weak
// (VER_FLG_WEAK: the loader then warns instead of refusing). Jazzer's loader
// looks in dist/prebuilds before prebuilds, so the original stays untouched.
// No maintained tool edits ELF symbol versions from Node (patchelf cannot
// mark a version weak), hence the few lines of ELF reading below.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

// sha256 of fuzzer-linux-x64.node as @jazzer.js/fuzzer 4.0.0 ships it: only that file is patched.
const SHIPPED_SHA256 = '59ffc0d22ea37c5edcf3d8b9b76b1d964940461a9337d0b14068e378e7703ac9';

function engineDir() {
  return path.dirname(require.resolve('@jazzer.js/fuzzer/package.json'));
}

/** True when Jazzer's engine loads in a fresh Node process. */
function engineLoads() {
  const { spawnSync } = require('child_process');
  const r = spawnSync(process.execPath, ['-e', 'require("@jazzer.js/fuzzer")'], { encoding: 'utf8', cwd: path.join(__dirname, '..') });
  return { ok: r.status === 0, stderr: r.stderr };
}

function readElf(b) {
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error('not a little-endian ELF64 file');
  const shoff = Number(b.readBigUInt64LE(0x28)), shentsize = b.readUInt16LE(0x3a), shnum = b.readUInt16LE(0x3c);
  const secs = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    secs.push({ type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)),
      link: b.readUInt32LE(o + 0x28), info: b.readUInt32LE(o + 0x2c), entsize: Number(b.readBigUInt64LE(o + 0x38)) });
  }
  const dynsym = secs.find((s) => s.type === 11 /* SHT_DYNSYM */);
  const dynstr = secs[dynsym.link];
  const versym = secs.find((s) => s.type === 0x6fffffff /* SHT_GNU_versym */);
  const verneed = secs.find((s) => s.type === 0x6ffffffe /* SHT_GNU_verneed */);
  const str = (off) => { let e = dynstr.offset + off; while (b[e] !== 0) e++; return b.toString('latin1', dynstr.offset + off, e); };
  const needs = [];
  let vo = verneed.offset;
  for (let n = 0; n < verneed.info; n++) {
    const cnt = b.readUInt16LE(vo + 2), file = str(b.readUInt32LE(vo + 4));
    let ao = vo + b.readUInt32LE(vo + 8);
    for (let k = 0; k < cnt; k++) {
      needs.push({ at: ao, file, name: str(b.readUInt32LE(ao + 8)), index: b.readUInt16LE(ao + 6), flags: b.readUInt16LE(ao + 4) });
      ao += b.readUInt32LE(ao + 12);
    }
    vo += b.readUInt32LE(vo + 12);
  }
  const syms = [];
  for (let i = 0; i < dynsym.size / dynsym.entsize; i++) {
    const nameOff = b.readUInt32LE(dynsym.offset + i * dynsym.entsize);
    syms.push({ i, nameOff, name: str(nameOff), versymAt: versym.offset + 2 * i });
  }
  return { needs, syms, dynstrOffset: dynstr.offset };
}

function patch(b) {
  const { needs, syms, dynstrOffset } = readElf(b);
  const need = (file, name) => {
    const n = needs.find((x) => x.file === file && x.name === name);
    if (!n) throw new Error(`no ${file} ${name} requirement: not the engine this patch was written for`);
    return n;
  };
  const base = need('libc.so.6', 'GLIBC_2.2.5').index;
  const rename = { __isoc23_strtol: 'strtoimax', __isoc23_strtoul: 'strtoumax' };
  for (const s of syms) {
    const to = rename[s.name];
    if (!to) continue;
    // Another name sharing these bytes (a suffix) would change too.
    if (syms.some((o) => o !== s && o.nameOff > s.nameOff && o.nameOff <= s.nameOff + s.name.length)) throw new Error(`${s.name}: its name is shared`);
    b.write(to + '\0', dynstrOffset + s.nameOff, 'latin1');
    b.writeUInt16LE(base, s.versymAt);
    delete rename[s.name];
  }
  if (Object.keys(rename).length) throw new Error(`symbols not found: ${Object.keys(rename).join(', ')}`);
  for (const n of [need('libc.so.6', 'GLIBC_2.38'), need('libstdc++.so.6', 'GLIBCXX_3.4.32')]) b.writeUInt16LE(n.flags | 2 /* VER_FLG_WEAK */, n.at + 4);
  return b;
}

/** Makes Jazzer's engine load here, patching a copy only when it does not load as shipped. */
function ensureEngine() {
  const patched = path.join(engineDir(), 'dist', 'prebuilds', 'fuzzer-linux-x64.node');
  let r = engineLoads();
  if (r.ok) return fs.existsSync(patched) ? `the copy patched for glibc < 2.38 (${patched})` : 'as shipped';
  if (process.platform !== 'linux' || process.arch !== 'x64' || !/GLIBC_2\.38|GLIBCXX_3\.4\.32/.test(r.stderr)) {
    throw new Error(`Jazzer.js's fuzzing engine does not load here:\n${r.stderr}`);
  }
  const original = path.join(engineDir(), 'prebuilds', 'fuzzer-linux-x64.node');
  const bytes = fs.readFileSync(original);
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  if (sha !== SHIPPED_SHA256) throw new Error(`${original}: sha256 ${sha} is not the Jazzer.js 4.0.0 engine this patch was written for`);
  fs.mkdirSync(path.dirname(patched), { recursive: true });
  const tmp = `${patched}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, patch(Buffer.from(bytes)));
  fs.renameSync(tmp, patched);
  r = engineLoads();
  if (!r.ok) throw new Error(`Jazzer.js's fuzzing engine still does not load after the glibc patch:\n${r.stderr}`);
  return 'patched for glibc < 2.38';
}

module.exports = { ensureEngine, patch, readElf };

if (require.main === module) console.log(`jazzer engine: ${ensureEngine()}`);
