// The package in worker_threads: every Worker that loads it gets state of its
// own (a class of one environment is not a value in another), and a Worker
// terminated while a call runs stops that call without touching the other
// environments. Each scenario runs in a child process, since a failure here is
// a process abort, not an exception.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

function runScript(body: string): { status: number | null; signal: NodeJS.Signals | null; out: string } {
  const script = `const { Worker } = require('worker_threads');\nconst DIST = ${JSON.stringify(dist)};\n${body}`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 90000 });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

// A Worker that loads the package, makes a model and answers, then reports.
const WORKER = (tokens: number) => `
  const lib = require(${JSON.stringify(dist)});
  lib.loadModel(lib.demoModelDir()).then(async (m) => {
    require('worker_threads').parentPort.postMessage('started');
    const [g] = await m.generate(['What is the passport type?'], { chat: true, maxNewTokens: ${tokens} });
    require('worker_threads').parentPort.postMessage('answered ' + g.ids.length);
  });`;

(fs.existsSync(dist) ? describe : describe.skip)('worker_threads', () => {
  test('a Worker loads the package after the main thread: both use their models, before and after it ends', () => {
    const r = runScript(`
      (async () => {
        const lib = require(DIST);
        const m = await lib.loadModel(lib.demoModelDir());
        const w = new Worker(${JSON.stringify(WORKER(4))}, { eval: true });
        await new Promise((resolve) => w.on('message', (msg) => { if (msg.startsWith('answered')) resolve(); }));
        const [a] = await m.generate(['What is the passport type?'], { chat: true, maxNewTokens: 4 });
        await w.terminate();
        const [b] = await m.generate(['What is the passport type?'], { chat: true, maxNewTokens: 4 });
        await m.dispose();
        console.log(JSON.stringify({ same: a.text === b.text, text: a.text }));
      })();`);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(JSON.parse(r.out.trim().split('\n').pop()!)).toMatchObject({ same: true });
  });

  test('a Worker loads it first, then the main thread: the main thread\'s calls work', () => {
    const r = runScript(`
      (async () => {
        const w = new Worker(${JSON.stringify(WORKER(2))}, { eval: true });
        await new Promise((resolve) => w.on('message', (msg) => { if (msg.startsWith('answered')) resolve(); }));
        const lib = require(DIST);
        const m = await lib.loadModel(lib.demoModelDir());
        const [a] = await m.generate(['Hi'], { maxNewTokens: 2 });
        await w.terminate();
        await m.dispose();
        console.log('ok ' + a.ids.length);
      })();`);
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/ok \d/);
  });

  test('worker.terminate() while its call runs, at many moments: no abort, and the main thread goes on', () => {
    const r = runScript(`
      (async () => {
        const lib = require(DIST);
        const main = await lib.loadModel(lib.demoModelDir());
        for (let i = 0; i < 12; i++) {
          const w = new Worker(${JSON.stringify(WORKER(200))}, { eval: true });
          await new Promise((resolve) => w.on('message', (msg) => { if (msg === 'started') resolve(); }));
          await new Promise((resolve) => setTimeout(resolve, i * 15));
          await w.terminate();
          const [g] = await main.generate(['What is the passport type?'], { chat: true, maxNewTokens: 2 });
          if (g.ids.length === 0) throw new Error('no answer');
        }
        await main.dispose();
        console.log('survived');
      })();`);
    expect(r.signal).toBeNull();
    expect(r.out).toMatch(/survived/);
    expect(r.status).toBe(0);
  });
});
