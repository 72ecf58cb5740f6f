'use strict';
// Shared by the benchmark scripts: the median of repeated timings, and the
// JSON lines a script printed among other output.
const fs = require('fs');

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The JSON objects of a log, one per line; other lines (and a missing file) give nothing. */
function jsonLines(file) {
  if (!fs.existsSync(file)) return [];
  const out = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const s = line.trim();
    if (!s.startsWith('{')) continue;
    try { out.push(JSON.parse(s)); } catch { /* a log line that only looks like JSON, or one cut off */ }
  }
  return out;
}

module.exports = { median, jsonLines };
