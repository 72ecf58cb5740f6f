// ngate build: the native addon, built now for the libtorch the library would
// use (or the one given), instead of at the first loadModel().
import { Command } from 'commander';
import { buildTools } from '../model/native';
import { NgateError } from '../util/errors';
import { addOutputOptions, Context, Define, parsePositiveInt } from './shared';

async function buildCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const t = buildTools();
  const torch = t.findLibtorch({ libtorch: o.libtorch as string | undefined, askPython: true });
  if (!torch) throw new NgateError('ERR_ADDON', t.HOW_TO_GET);
  ctx.log(`building the addon for libtorch ${torch.version} (${torch.cuda ? `CUDA ${torch.cuda}` : 'CPU'}) from ${torch.source}: ${torch.configDir}`);
  const b = await t.ensureBuild(torch, {
    force: !!o.force, cudaArchitectures: o.cudaArch as string | undefined, jobs: o.jobs as number | undefined,
    onLine: o.verbose ? (line) => ctx.log(line) : undefined,
    onProgress: o.verbose ? undefined : (m) => ctx.log(`still building (${m})`),
    onWait: (pid) => ctx.log(`waiting for process ${pid}, which is building the addon`),
  });
  ctx.emit({ file: b.file, built: b.built, ...b.info }, b.built
    ? `built ${b.file} in ${b.info.seconds} s`
    : `up to date: ${b.file} (built ${b.info.builtAt}; --force builds it again)`);
}

export function addBuildCommand(define: Define): Command {
  return addOutputOptions(define('build', 'build the native addon for the libtorch the library uses (normally done by the first loadModel)', buildCommand)
    .option('--libtorch <dir>', 'build against this libtorch (a folder with share/cmake/Torch; like LIBTORCH=)')
    .option('--cuda-arch <list>', 'CUDA architectures, e.g. 90 or "80;90" (default: NGATE_CUDA_ARCHITECTURES, else the GPUs visible)')
    .option('--jobs <n>', 'parallel compile jobs (default: the cores)', parsePositiveInt)
    .option('--force', 'build even when a build for this libtorch and these sources exists')
    .option('--verbose', 'print the compiler output as it comes'));
}
