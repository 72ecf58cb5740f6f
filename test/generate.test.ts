// generate() beyond greedy decoding: sampling that repeats with its seed and
// reduces to greedy where it must, transformers' repetition penalty, stop
// strings, the token stream (onToken and stream()), and a model's lifetime
// (dispose waits for the running call; thread count). On the embedded demo
// model, whose answers are real sentences.
import { loadModel, Model, nativeInfo, setThreads } from '../lib';
import { demoModelDir } from '../lib/demo/run';
import { loadAddon } from '../lib/model/native';

const question = 'What is the passport type shown in the image?';
let model: Model;

beforeAll(async () => { model = await loadModel(demoModelDir()); });
afterAll(() => model?.dispose());

function softmaxArgsort(row: Float32Array): number[] {
  return Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
}

describe('decoding options', () => {
  test('with no option, and with every option at its off value, decoding is greedy and identical', async () => {
    const [plain] = await model.generate([question], { chat: true, maxNewTokens: 24, returnLogits: true });
    const [off] = await model.generate([question], { chat: true, maxNewTokens: 24, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1 });
    expect(off.ids).toEqual(plain.ids);
    // Greedy: every token is the argmax of its step's logits.
    const V = model.config.vocabSize;
    plain.ids.forEach((id, s) => expect(softmaxArgsort(plain.logits!.subarray(s * V, (s + 1) * V))[0]).toBe(id));
    expect(plain.text.length).toBeGreaterThan(10);
  });

  test('a sampled generation repeats with its seed, and another seed draws differently', async () => {
    const opts = { chat: true, maxNewTokens: 24, temperature: 1.5 };
    const runs = await Promise.all([1, 1, 2, 3].map((seed) => model.generate([question, question], { ...opts, seed })));
    expect(runs[1][0].ids).toEqual(runs[0][0].ids);
    expect(runs[1][1].ids).toEqual(runs[0][1].ids);
    const distinct = new Set(runs.flatMap((r) => r.map((g) => g.ids.join(','))));
    expect(distinct.size).toBeGreaterThan(1);
  });

  test('top-k 1 and a tiny top-p leave only the argmax: sampling gives the greedy answer', async () => {
    const [greedy] = await model.generate([question], { chat: true, maxNewTokens: 24 });
    const [k1] = await model.generate([question], { chat: true, maxNewTokens: 24, temperature: 2, topK: 1, seed: 5 });
    const [p0] = await model.generate([question], { chat: true, maxNewTokens: 24, temperature: 2, topP: 1e-6, seed: 5 });
    expect(k1.ids).toEqual(greedy.ids);
    expect(p0.ids).toEqual(greedy.ids);
  });

  test('every token drawn with top-k 3 is among the 3 most likely of its step', async () => {
    const [g] = await model.generate([question, 'What is the phone number of the account?'], { chat: true, maxNewTokens: 24, temperature: 3, topK: 3, seed: 11, returnLogits: true });
    const V = model.config.vocabSize;
    expect(g.ids.length).toBeGreaterThan(0);
    g.ids.forEach((id, s) => expect(softmaxArgsort(g.logits!.subarray(s * V, (s + 1) * V)).slice(0, 3)).toContain(id));
  });

  test('the repetition penalty scales the logits of tokens already seen, as transformers does', async () => {
    const penalty = 1.7;
    const [g] = await model.generate([question], { chat: true, maxNewTokens: 1, repetitionPenalty: penalty, returnLogits: true });
    const promptIds = g.promptIds;
    const { logits } = await model.forward([promptIds], { lastOnly: true });
    const seen = new Set(promptIds);
    let worst = 0;
    for (let v = 0; v < logits.length; v++) {
      const x = logits[v];
      const want = seen.has(v) ? (x > 0 ? x / penalty : x * penalty) : x;
      worst = Math.max(worst, Math.abs(g.logits![v] - want));
    }
    expect(worst).toBeLessThan(1e-4);
  });

  test('bad sampling options are refused with the field named', async () => {
    await expect(model.generate(['x'], { temperature: -1 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'temperature' });
    await expect(model.generate(['x'], { temperature: 1, topP: 0 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'topP' });
    await expect(model.generate(['x'], { topK: 5 })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'topK' });
    await expect(model.generate(['x'], { stop: [''] })).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'stop' });
  });
});

describe('stop strings and streaming', () => {
  test('an answer ends before its stop string; the ids end at the token that completed it', async () => {
    const [full] = await model.generate([question], { chat: true, maxNewTokens: 32 });
    const stop = full.text.slice(8, 12);
    const cut = full.text.indexOf(stop);
    const [g] = await model.generate([question], { chat: true, maxNewTokens: 32, stop: [stop] });
    expect(g.finishReason).toBe('stop');
    expect(g.text).toBe(full.text.slice(0, cut));
    expect(full.ids.slice(0, g.ids.length)).toEqual(g.ids);
    expect((await model.tokenizer.decode(g.ids)).includes(stop)).toBe(true);
    expect((await model.tokenizer.decode(g.ids.slice(0, -1))).includes(stop)).toBe(false);
  });

  test('onToken streams every answer piece by piece: the pieces add up to the answers', async () => {
    const prompts = [question, 'What is the owner name on the receipt?'];
    const pieces: string[][] = [[], []];
    const ids: number[][] = [[], []];
    const gens = await model.generate(prompts, { chat: true, maxNewTokens: 24, onToken: (t) => { pieces[t.index].push(t.text); ids[t.index].push(...t.ids); } });
    gens.forEach((g, b) => {
      expect(pieces[b].join('')).toBe(g.text);
      expect(ids[b]).toEqual(g.ids);
      expect(pieces[b].length).toBeGreaterThan(1);
    });
  });

  test('a streamed answer with a stop string never shows any of it', async () => {
    const [full] = await model.generate([question], { chat: true, maxNewTokens: 32 });
    const stop = full.text.slice(5, 15);
    const seen: string[] = [];
    const [g] = await model.generate([question], { chat: true, maxNewTokens: 32, stop: [stop], onToken: (t) => seen.push(t.text) });
    expect(seen.join('')).toBe(g.text);
    expect(seen.join('')).not.toContain(stop);
  });

  test('stream() yields the pieces in order and returns the generations', async () => {
    const [want] = await model.generate([question], { chat: true, maxNewTokens: 20 });
    const it = model.stream(question, { chat: true, maxNewTokens: 20 });
    let text = '';
    let r = await it.next();
    while (!r.done) { text += r.value.text; r = await it.next(); }
    expect(text).toBe(want.text);
    expect(r.value[0].ids).toEqual(want.ids);
  });

  test('leaving a stream early stops its generation and frees the model for the next call', async () => {
    let n = 0;
    for await (const t of model.stream(question, { chat: true, maxNewTokens: 200 })) {
      expect(t.index).toBe(0);
      if (++n === 2) break;
    }
    const [after] = await model.generate(['Hello'], { maxNewTokens: 2 });
    expect(after.ids.length).toBeGreaterThan(0);
  });
});

describe('lifetime and threads', () => {
  test('dispose() during a call stops it with ERR_DISPOSED and resolves once the weights are freed', async () => {
    const m = await loadModel(demoModelDir());
    const live = loadAddon().liveModels();
    let started!: () => void;
    const running = new Promise<void>((r) => { started = r; });
    const p = m.generate([question], { maxNewTokens: 200, onProgress: () => started() });
    const queued = m.forward([[1, 2, 3]]);
    await running;
    await m.dispose();
    expect(loadAddon().liveModels()).toBe(live - 1);
    await expect(p).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await expect(queued).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await m.dispose();  // again: harmless
  });

  test('`using` and `await using` free the model at the end of the block', async () => {
    const m = await loadModel(demoModelDir());
    const live = loadAddon().liveModels();
    await m[Symbol.asyncDispose]();
    expect(m.disposed).toBe(true);
    expect(loadAddon().liveModels()).toBe(live - 1);
    const m2 = await loadModel(demoModelDir());
    m2[Symbol.dispose]();
    expect(m2.disposed).toBe(true);
  });

  test('setThreads sets the threads the work runs with, and nativeInfo reports them', async () => {
    const before = (await nativeInfo()).threads;
    expect(before).toBeGreaterThanOrEqual(1);
    expect(await setThreads(1)).toBe(1);
    expect((await nativeInfo()).threads).toBe(1);
    const m = await loadModel(demoModelDir(), { threads: 2 });
    expect((await nativeInfo()).threads).toBe(2);
    await m.dispose();
    await setThreads(before);
    await expect(setThreads(0)).rejects.toMatchObject({ code: 'ERR_INPUT', field: 'threads' });
  });
});
