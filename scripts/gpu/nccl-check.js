#!/usr/bin/env node
'use strict';
// One rank of the NCCL check (scripts/gpu/dist-nccl.sh), under `ngate launch
// --exec`: joins with device 'cuda' (GPU LOCAL_RANK), insists on the NCCL
// backend, and checks every collective the library uses against the values it
// must give; the last line is one JSON verdict per rank.
const path = require('path');
const lib = require(process.env.NGATE_DIST || path.join(__dirname, '..', '..', 'dist'));

(async () => {
  const g = await lib.initProcessGroup({ device: 'cuda', timeoutMs: 60000 });
  const fail = [];
  if (g.backend !== 'nccl') fail.push(`backend ${g.backend}`);
  const W = g.size, r = g.rank;
  const f = await g.allreduce(Float32Array.from({ length: 1 << 20 }, (_, i) => (r + 1) * (i % 7)), 'sum');
  for (let i = 0; i < f.length; i++) if (f[i] !== (i % 7) * W * (W + 1) / 2) { fail.push(`float32 sum at ${i}`); break; }
  const l = await g.allreduce(new BigInt64Array([BigInt(r) * 10000000000n, -BigInt(r)]), 'max');
  if (l[0] !== BigInt(W - 1) * 10000000000n || l[1] !== 0n) fail.push('int64 max');
  const n = await g.allreduce(new Float64Array([r]), 'min');
  if (n[0] !== 0) fail.push('float64 min');
  const parts = await g.gatherJson({ rank: r, text: 'ü'.repeat(r + 1) });
  if (parts.some((p, i) => p.rank !== i || p.text !== 'ü'.repeat(i + 1))) fail.push('gather');
  await g.barrier();
  console.log(JSON.stringify({ rank: r, size: W, backend: g.backend, device: g.device, ok: fail.length === 0, fail }));
  await g.destroy();
  process.exit(fail.length === 0 ? 0 : 1);
})().catch((e) => { console.error(e.stack || e.message); process.exit(1); });
