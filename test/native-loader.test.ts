// The addon loader tries each candidate binary in a child process first, so
// that a broken or mismatched build is skipped with a reason instead of
// taking the process down.
import * as fs from 'fs';
import * as path from 'path';
import { firstLoadable, loadAddon, loadedAddon } from '../lib/model/native';
import { makeTempDir } from './fixtures/checkpoint';

test('a corrupt binary is skipped with its reason and the next candidate is used', () => {
  const bad = path.join(makeTempDir(), 'corrupt.node');
  fs.writeFileSync(bad, 'this is not a shared object');
  loadAddon();
  const good = loadedAddon()!.file;
  const picked = firstLoadable([bad, good]);
  expect(picked.file).toBe(good);
  expect(picked.failures).toHaveLength(1);
  expect(picked.failures[0]).toContain(bad);
});

test('no loadable candidate gives no file and every reason', () => {
  const dir = makeTempDir();
  const a = path.join(dir, 'a.node');
  const b = path.join(dir, 'b.node');
  fs.writeFileSync(a, '');
  fs.writeFileSync(b, 'garbage');
  const picked = firstLoadable([a, b]);
  expect(picked.file).toBeNull();
  expect(picked.failures.map((f) => f.split(':')[0])).toEqual([a, b]);
});

test('the addon reports the libtorch it was built against', () => {
  const info = loadAddon().info();
  expect(info.torchVersion).toMatch(/^\d+\.\d+/);
  expect(typeof info.cuda).toBe('boolean');
  expect([0, 1]).toContain(info.cxx11Abi);
});
