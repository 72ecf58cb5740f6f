// A save is whole or absent, also when the process is killed in the middle:
// every interrupted state of the swap is finished by the next load or save,
// and temporary folders left by a killed save are removed by the next one.
// The states are made by hand (the window between two renames is too narrow
// to hit by chance); then real SIGKILLs land at random moments of a save loop.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../lib';
import { journalFor, recoverSwap, removeStaleTemps, swapInto, tempFolderFor } from '../lib/model/folder-swap';
import { makeTempDir, writeTinyLlama } from './fixtures/checkpoint';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

function folder(dir: string, marker: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'which'), marker);
}
const which = (dir: string) => fs.readFileSync(path.join(dir, 'which'), 'utf8');
const ours = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes('.ngate-'));

describe('an overwrite interrupted at each step of the swap', () => {
  // The steps of swapInto: journal written, target renamed to old, tmp renamed to target, old removed, journal removed.
  const states = [
    ['after the journal', (t: string, tmp: string, old: string) => { void t; void tmp; void old; }],
    ['after target → old', (t: string, _tmp: string, old: string) => fs.renameSync(t, old)],
    ['after tmp → target', (t: string, tmp: string, old: string) => { fs.renameSync(t, old); fs.renameSync(tmp, t); }],
    ['after old is removed', (t: string, tmp: string, old: string) => { fs.renameSync(t, old); fs.renameSync(tmp, t); fs.rmSync(old, { recursive: true }); }],
  ] as const;
  test.each(states)('%s, the next recovery leaves the new folder in place and nothing else', (_name, crash) => {
    const parent = makeTempDir('ngate-swap-');
    const target = path.join(parent, 'ckpt');
    folder(target, 'old');
    const tmp = tempFolderFor(target);
    folder(tmp, 'new');
    const old = `${tmp}-old`;
    fs.writeFileSync(journalFor(target), JSON.stringify({ target: 'ckpt', tmp: path.basename(tmp), old: path.basename(old) }));
    crash(target, tmp, old);
    expect(recoverSwap(target)).not.toBeNull();
    expect(which(target)).toBe('new');
    expect(ours(parent)).toEqual([]);
  });

  test('swapInto itself leaves the new folder and no journal; stale temporary folders of dead processes are removed', () => {
    const parent = makeTempDir('ngate-swap-');
    const target = path.join(parent, 'ckpt');
    folder(target, 'old');
    const tmp = tempFolderFor(target);
    folder(tmp, 'new');
    swapInto(tmp, target);
    expect(which(target)).toBe('new');
    expect(ours(parent)).toEqual([]);
    folder(path.join(parent, '.ckpt.ngate-tmp-999999999-abc'), 'stale');     // no such process
    folder(path.join(parent, `.ckpt.ngate-tmp-${process.pid}-abc`), 'live');  // this one: kept
    expect(removeStaleTemps(parent)).toEqual(['.ckpt.ngate-tmp-999999999-abc']);
    expect(ours(parent)).toEqual([`.ckpt.ngate-tmp-${process.pid}-abc`]);
  });
});

(fs.existsSync(dist) ? test : test.skip)('SIGKILL at random moments of a save loop: the target always loads whole, and the next save leaves no temporary folder', async () => {
  const src = writeTinyLlama(makeTempDir(), { seed: 3, numLayers: 2 }).dir;
  const parent = makeTempDir('ngate-kill-');
  const target = path.join(parent, 'saved');
  const model = await loadModel(src);
  await model.save(target);
  const want = Array.from((await model.forward([[1, 2, 3]])).logits);
  const kills = Number(process.env.NGATE_SAVE_KILLS ?? 6);
  for (let k = 0; k < kills; k++) {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'save-worker.js'), dist, src, target], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => { if (/ready/.test(d.toString())) resolve(); });
      child.on('exit', () => reject(new Error('the worker ended before it was ready')));
    });
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 300));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const again = await loadModel(target);  // finishes an interrupted swap, if any
    expect(Array.from((await again.forward([[1, 2, 3]])).logits)).toEqual(want);
    await again.dispose();
  }
  const left = ours(parent).length;
  await model.save(target, { overwrite: true });  // removes what killed saves left
  expect(ours(parent)).toEqual([]);
  if (process.env.NGATE_SAVE_KILLS) console.log(`${kills} kills: ${left} temporary folders left by them, 0 after the next save`);
  await model.dispose();
});
