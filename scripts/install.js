#!/usr/bin/env node
'use strict';
// npm's install hook, best effort: build the addon now when libtorch is found,
// so the first use does not wait for it. It never fails the install: when
// there is no libtorch, or the build fails, the first loadModel() builds again
// (or says what is missing), and `npx ngate doctor` tells what to fix. npm 11
// runs this only for packages the user allowed to run scripts.
const { findLibtorch, HOW_TO_GET } = require('./find-libtorch');
const { ensureBuild, findBuild } = require('./addon');

const mode = process.env.NGATE_BUILD || 'auto';
if (process.env.NGATE_SKIP_BUILD || mode === 'never') process.exit(0);

let torch = null;
try {
  torch = findLibtorch({ askPython: true });
} catch (e) {
  console.error(`@ngate/core: ${e.message}`);
}
if (!torch) {
  console.error(`@ngate/core: no addon built at install. ${HOW_TO_GET}\nThe first loadModel() builds it once libtorch is there; \`npx ngate doctor\` checks the setup.`);
  process.exit(0);
}
const existing = mode === 'force' ? null : findBuild(torch);
if (existing) {
  console.error(`@ngate/core: using the addon already built for this libtorch: ${existing.file}`);
  process.exit(0);
}
console.error(`@ngate/core: building the addon against libtorch ${torch.version} (${torch.cuda ? `CUDA ${torch.cuda}` : 'CPU'}) from ${torch.configDir}; a few minutes`);
ensureBuild(torch, { force: mode === 'force', onProgress: (m) => console.error(`@ngate/core: still building (${m})`) })
  .then((b) => console.error(`@ngate/core: ${b.built ? 'built' : 'using'} ${b.file}`))
  .catch((e) => console.error(`@ngate/core: the addon build at install failed; the first loadModel() will try again.\n${e.message}`));
