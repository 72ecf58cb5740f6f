#!/usr/bin/env node
'use strict';
// One list of the addon's C++ sources, read by CMakeLists.txt and scripts/addon.js
// alike, so that the two builds cannot drift apart.
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const dirs = ['native/binding', 'native/model', 'native/method', 'native/dist'];
const sources = dirs.flatMap((d) => {
  const abs = path.join(root, d);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs).filter((f) => f.endsWith('.cpp')).sort().map((f) => `${d}/${f}`);
});

if (process.argv.includes('--cmake')) process.stdout.write(sources.join(';'));
else process.stdout.write(sources.join(' '));
module.exports = sources;
