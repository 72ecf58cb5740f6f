#!/usr/bin/env node
'use strict';
// Finds the libtorch installations on this machine and describes each one: its
// folders, version, CUDA version (or none), C++ ABI and a key that names it.
// The addon is built against one of them and is valid with that one only, so
// the key is part of every built addon's name (scripts/addon.js).
//
// Looked for in: $LIBTORCH (an explicit choice, always used when set),
// $CMAKE_PREFIX_PATH, the `torch` package of a Python (found without importing
// it), and the system (Debian's libtorch-dev). Without an explicit choice a
// CUDA libtorch wins over a CPU one. Run it to see what it finds:
//   node scripts/find-libtorch.js [--all | --cmake-prefix | --include | --libdir | --libs | --abi | --abi-flag]
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const HOW_TO_GET =
  'libtorch was not found. Install it with one of:\n' +
  '  - Debian/Ubuntu: `apt-get install libtorch-dev` (CPU, PyTorch 1.13)\n' +
  '  - a Python PyTorch: `pip install torch` (its bundled libtorch is used, CUDA included)\n' +
  '  - the libtorch zip from pytorch.org, then `export LIBTORCH=/path/to/libtorch`\n' +
  'or point CMAKE_PREFIX_PATH at a folder containing share/cmake/Torch/TorchConfig.cmake.';

function torchConfigDirIn(prefix) {
  const candidates = [
    path.join(prefix, 'share', 'cmake', 'Torch'),
    path.join(prefix, 'lib', 'cmake', 'Torch'),
    path.join(prefix, 'lib', 'x86_64-linux-gnu', 'cmake', 'Torch'),
    path.join(prefix, 'lib', 'aarch64-linux-gnu', 'cmake', 'Torch'),
    path.join(prefix, 'cmake', 'Torch'),
    path.join(prefix, 'Torch'),
    prefix,
  ];
  return candidates.find((d) => fs.existsSync(path.join(d, 'TorchConfig.cmake'))) || null;
}

function readText(file) {
  try { return fs.readFileSync(file, 'utf8'); } catch { return null; }
}

// The library folder and include folders that sit next to a TorchConfig.cmake.
function layoutFrom(configDir, source) {
  // Python torch / libtorch zip: <root>/share/cmake/Torch → <root>/{include,lib}
  const root = path.resolve(configDir, '..', '..', '..');
  if (fs.existsSync(path.join(root, 'include', 'torch')) && fs.existsSync(path.join(root, 'lib'))) {
    return {
      source, configDir, root,
      includeDirs: [path.join(root, 'include'), path.join(root, 'include', 'torch', 'csrc', 'api', 'include')],
      libDir: path.join(root, 'lib'),
    };
  }
  // Debian: /usr/lib/<triplet>/cmake/Torch → /usr/include, /usr/lib/<triplet>
  const libDir = path.resolve(configDir, '..', '..');
  const usr = path.resolve(libDir, '..', '..');
  return {
    source, configDir, root: usr,
    includeDirs: [path.join(usr, 'include'), path.join(usr, 'include', 'torch', 'csrc', 'api', 'include')],
    libDir,
  };
}

// Version and CUDA version from the files each kind of installation carries,
// without loading libtorch: a Python package's torch/version.py, a zip's
// build-version ("2.5.1+cu124"), else the CMake package version and, for
// CUDA, the presence of libtorch_cuda.
function describe(configDir, source) {
  const t = layoutFrom(configDir, source);
  const has = (name) => fs.existsSync(path.join(t.libDir, `lib${name}.so`));
  t.libs = ['torch', 'torch_cpu', 'c10'].concat(has('torch_cuda') ? ['torch_cuda', 'c10_cuda'] : []);
  const cmakeVersion = (/PACKAGE_VERSION "([^"]+)"/.exec(readText(path.join(configDir, 'TorchConfigVersion.cmake')) || '') || [])[1];
  const pyVersion = readText(path.join(t.root, 'version.py'));
  const buildVersion = (readText(path.join(t.root, 'build-version')) || '').trim();
  let version = cmakeVersion || 'unknown';
  let cuda = null;
  if (pyVersion) {
    version = (/__version__\s*=\s*'([^']+)'/.exec(pyVersion) || [])[1] || version;
    const c = /^cuda\s*=\s*'([^']+)'/m.exec(pyVersion);
    if (c) cuda = c[1];
  } else if (buildVersion) {
    version = buildVersion;
    const c = /\+cu(\d+)(\d)$/.exec(buildVersion);
    if (c) cuda = `${c[1]}.${c[2]}`;
  }
  if (!cuda && has('torch_cuda')) cuda = 'unknown';
  t.version = version.replace(/\+.*$/, '');
  t.cuda = cuda;
  // libtorch's std::string ABI, as its CMake config states it.
  const abi = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(readText(path.join(configDir, 'TorchConfig.cmake')) || '');
  t.cxx11Abi = abi ? Number(abi[1]) : 1;
  // The prefix cmake's find_package(Torch) needs: the folder that holds Torch/.
  t.cmakePrefix = path.dirname(configDir);
  const real = fs.realpathSync(configDir);
  t.key = [`torch${t.version}`, cuda ? `cu${cuda === 'unknown' ? '' : cuda.replace('.', '')}` : 'cpu', `abi${t.cxx11Abi}`,
    crypto.createHash('sha256').update(real).digest('hex').slice(0, 8)].join('-');
  return t;
}

function fromEnvLibtorch(dir) {
  if (!dir) return null;
  const cfg = torchConfigDirIn(dir);
  if (!cfg) throw new Error(`libtorch not found in ${dir}: it has no share/cmake/Torch/TorchConfig.cmake.\n${HOW_TO_GET}`);
  return describe(cfg, 'LIBTORCH');
}

function fromPrefixPath() {
  const list = (process.env.CMAKE_PREFIX_PATH || '').split(path.delimiter).filter(Boolean);
  return list.map((p) => torchConfigDirIn(p)).filter(Boolean).map((cfg) => describe(cfg, 'CMAKE_PREFIX_PATH'));
}

// The `torch` package of a Python, when it ships its CMake files (pip's does,
// Debian's python3-torch does not). Two ways to find it:
// - by asking each Python on PATH where `torch` is (importlib, without
//   importing it): exact, but 50–400 ms per interpreter (pyenv's shims are
//   slow), so only for builds and `ngate doctor`;
// - by looking in the site-packages of the prefixes Pythons live in (PATH,
//   a virtualenv, conda, pyenv, the user site): file checks only, for every load.
function fromPythonByAsking() {
  const out = [];
  const script = 'import importlib.util as u;s=u.find_spec("torch");print(s.submodule_search_locations[0] if s and s.submodule_search_locations else "")';
  for (const py of [...new Set([process.env.PYTHON, 'python3', 'python'].filter(Boolean))]) {
    try {
      const dir = execFileSync(py, ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 20000 }).toString().trim();
      const cfg = dir && torchConfigDirIn(path.join(dir, 'share', 'cmake'));
      if (cfg) out.push(describe(cfg, `python (${py})`));
    } catch { /* no such python, or no torch: try the next */ }
  }
  return out;
}

function listDir(dir) {
  try { return fs.readdirSync(dir); } catch { return []; }
}

function fromPythonPrefixes() {
  const prefixes = new Set();
  for (const env of ['VIRTUAL_ENV', 'CONDA_PREFIX']) if (process.env[env]) prefixes.add(process.env[env]);
  for (const dir of (process.env.PATH || '').split(path.delimiter).filter(Boolean)) {
    if (!['python3', 'python'].some((n) => fs.existsSync(path.join(dir, n)))) continue;
    prefixes.add(path.dirname(dir));
    for (const n of ['python3', 'python']) {
      try { prefixes.add(path.dirname(path.dirname(fs.realpathSync(path.join(dir, n))))); } catch { /* dangling link */ }
    }
  }
  const home = process.env.HOME || '';
  const pyenv = process.env.PYENV_ROOT || (home && path.join(home, '.pyenv'));
  if (pyenv) for (const v of listDir(path.join(pyenv, 'versions'))) prefixes.add(path.join(pyenv, 'versions', v));
  if (home) prefixes.add(path.join(home, '.local'));
  const out = [];
  for (const prefix of prefixes) {
    for (const lib of listDir(path.join(prefix, 'lib')).filter((d) => /^python3/.test(d))) {
      for (const site of ['site-packages', 'dist-packages']) {
        const cfg = torchConfigDirIn(path.join(prefix, 'lib', lib, site, 'torch', 'share', 'cmake'));
        if (cfg) out.push(describe(cfg, `python (${path.join(prefix, 'lib', lib, site)})`));
      }
    }
  }
  return out;
}

function fromSystem() {
  const dirs = ['/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/lib/aarch64-linux-gnu/cmake/Torch',
    '/usr/share/cmake/Torch', '/usr/local/share/cmake/Torch', '/usr/lib/cmake/Torch', '/usr/local/lib/cmake/Torch'];
  return dirs.filter((d) => fs.existsSync(path.join(d, 'TorchConfig.cmake'))).map((cfg) => describe(cfg, 'system'));
}

/**
 * Every libtorch found, each once, in search order. With an explicit one
 * (LIBTORCH or opts.libtorch), only that. opts.askPython: also ask each Python
 * on PATH (slower; builds and doctor do).
 */
function findAllLibtorch(opts = {}) {
  const explicit = fromEnvLibtorch(opts.libtorch || process.env.LIBTORCH);
  if (explicit) return [explicit];
  const seen = new Set();
  const python = [...fromPythonPrefixes(), ...(opts.askPython ? fromPythonByAsking() : [])];
  return [...fromPrefixPath(), ...python, ...fromSystem()].filter((t) => {
    const real = fs.realpathSync(t.configDir);
    if (seen.has(real)) return false;
    seen.add(real);
    return true;
  });
}

/** The libtorch the addon is built against and loaded for: the explicit one, else the first CUDA one, else the first. */
function findLibtorch(opts = {}) {
  const all = findAllLibtorch(opts);
  return all.find((t) => t.cuda) || all[0] || null;
}

/** The libtorch whose TorchConfig.cmake is in `configDir` (that of an earlier build), or null when it is gone. */
function describeLibtorch(configDir, source) {
  return fs.existsSync(path.join(configDir, 'TorchConfig.cmake')) ? describe(configDir, source) : null;
}

module.exports = { findLibtorch, findAllLibtorch, describeLibtorch, HOW_TO_GET };

if (require.main === module) {
  const arg = process.argv[2];
  if (arg === '--all') {
    console.log(JSON.stringify(findAllLibtorch({ askPython: true }), null, 2));
    process.exit(0);
  }
  const found = findLibtorch({ askPython: true });
  if (!found) { console.error(HOW_TO_GET); process.exit(1); }
  if (arg === '--cmake-prefix') console.log(found.cmakePrefix);
  else if (arg === '--include') console.log(found.includeDirs.join(' '));
  else if (arg === '--libdir') console.log(found.libDir);
  else if (arg === '--abi') console.log(found.cxx11Abi);
  else if (arg === '--abi-flag') console.log(`-D_GLIBCXX_USE_CXX11_ABI=${found.cxx11Abi}`);
  else if (arg === '--libs') console.log(found.libs.map((l) => `-l${l}`).join(' '));
  else console.log(JSON.stringify(found, null, 2));
}
