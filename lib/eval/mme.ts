// MME (Fu et al. 2023): two yes/no questions per image, in 14 tasks. Read in
// either layout its users have:
// - the release, MME_Benchmark_release_version/<task>/: the images and, per
//   image, a .txt of the same name with "question<TAB>Yes|No" lines, either
//   side by side or in images/ and questions_answers_YN/ (artwork, celebrity,
//   landmark, posters, scene);
// - eval_tool's answer files, <task>.txt with "image<TAB>question<TAB>Yes|No"
//   lines (a fourth column, a prediction, is ignored), with `images` the
//   release folder (or a folder of the task folders' images).
// Scored as eval_tool/calculation.py: accuracy, and accuracy+ (an image
// counts when all its questions are right); a task's score is
// 100·(accuracy + accuracy+).
import * as fs from 'fs';
import * as path from 'path';
import { existing, fileError, findImage, outcomesOf, rate, tally } from './common';
import { MME_RULE, parseMme } from './parse';
import type { BenchmarkItem, BenchmarkOutcome, BenchmarkScore } from './types';

/** eval_tool's task lists. */
export const MME_TASKS = Object.freeze({
  perception: ['existence', 'count', 'position', 'color', 'posters', 'celebrity', 'scene', 'landmark', 'artwork', 'OCR'],
  cognition: ['commonsense_reasoning', 'numerical_calculation', 'text_translation', 'code_reasoning'],
});

const IMAGE_EXT = ['.jpg', '.png', '.jpeg', '.JPG', '.PNG', '.JPEG'];

function answerOf(raw: string, file: string, where: string): 'yes' | 'no' {
  const a = raw.trim().toLowerCase();
  if (a !== 'yes' && a !== 'no') throw fileError(file, `${where}: the answer must be Yes or No, got ${JSON.stringify(raw.trim())}`);
  return a;
}

function lines(file: string): { text: string; n: number }[] {
  return fs.readFileSync(file, 'utf8').split(/\r?\n/).map((text, i) => ({ text, n: i + 1 })).filter((l) => l.text.trim() !== '');
}

/** A release task folder: its per-image question files and the folder of their images. */
function releaseTask(dir: string): { qaDir: string; imageDir: string } | null {
  const qa = path.join(dir, 'questions_answers_YN'), img = path.join(dir, 'images');
  if (fs.existsSync(qa) && fs.statSync(qa).isDirectory()) return { qaDir: qa, imageDir: fs.existsSync(img) ? img : dir };
  if (fs.readdirSync(dir).some((f) => f.endsWith('.txt'))) return { qaDir: dir, imageDir: dir };
  return null;
}

function readRelease(root: string, tasks: { name: string; qaDir: string; imageDir: string }[]): BenchmarkItem[] {
  const items: BenchmarkItem[] = [];
  for (const t of tasks) {
    for (const f of fs.readdirSync(t.qaDir).filter((x) => x.endsWith('.txt')).sort()) {
      const file = path.join(t.qaDir, f);
      const stem = f.slice(0, -4);
      const image = findImage(IMAGE_EXT.map((e) => path.join(t.imageDir, stem + e)), file, 'its image');
      lines(file).forEach(({ text, n }, k) => {
        const cols = text.split('\t');
        if (cols.length !== 2) throw fileError(file, `line ${n}: expected "question<TAB>answer", got ${cols.length} column${cols.length === 1 ? '' : 's'}`);
        if (cols[0].trim() === '') throw fileError(file, `line ${n}: the question is empty`);
        const name = path.basename(image);
        items.push({ id: `${t.name}/${name}#${k}`, image, prompt: cols[0].trim(), answer: answerOf(cols[1], file, `line ${n}`), task: t.name, group: `${t.name}/${name}` });
      });
    }
  }
  if (items.length === 0) throw fileError(root, 'holds no MME questions');
  return items;
}

function readAnswerFiles(files: string[], images: string | undefined): BenchmarkItem[] {
  if (images === undefined) throw fileError(path.dirname(files[0]), 'MME answer files (<task>.txt) name images: give the folder they are in (the release folder) as images');
  const imageRoot = existing(images, 'images', 'dir');
  const items: BenchmarkItem[] = [];
  for (const file of files) {
    const task = path.basename(file, '.txt');
    const counter = new Map<string, number>();
    for (const { text, n } of lines(file)) {
      const cols = text.split('\t');
      if (cols.length !== 3 && cols.length !== 4) throw fileError(file, `line ${n}: expected "image<TAB>question<TAB>Yes|No", got ${cols.length} column${cols.length === 1 ? '' : 's'}`);
      const [name, question, ans] = cols.map((c) => c.trim());
      if (name === '' || question === '') throw fileError(file, `line ${n}: the image or the question is empty`);
      const answer = answerOf(ans, file, `line ${n}`);
      const image = findImage([path.join(imageRoot, task, name), path.join(imageRoot, task, 'images', name), path.join(imageRoot, name)], file, `line ${n}`);
      const k = counter.get(name) ?? 0;
      counter.set(name, k + 1);
      items.push({ id: `${task}/${name}#${k}`, image, prompt: question, answer, task, group: `${task}/${name}` });
    }
  }
  if (items.length === 0) throw fileError(path.dirname(files[0]), 'holds no MME questions');
  return items;
}

/**
 * The questions of MME: `data` a release folder, one of its task folders, a
 * folder of eval_tool answer files or one such file. `images` is needed for
 * answer files only (the release keeps its images beside the questions).
 */
export function readMme(data: string, images?: string): BenchmarkItem[] {
  const abs = existing(data, 'data');
  if (fs.statSync(abs).isFile()) return readAnswerFiles([abs], images);
  const own = releaseTask(abs);
  // One task folder of the release, in its images/ + questions_answers_YN/ layout.
  if (own && own.qaDir !== abs) return readRelease(abs, [{ name: path.basename(abs), ...own }]);
  const sub = fs.readdirSync(abs, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const tasks = sub.map((name) => ({ name, layout: releaseTask(path.join(abs, name)) }))
    .filter((t): t is { name: string; layout: { qaDir: string; imageDir: string } } => t.layout !== null)
    .map((t) => ({ name: t.name, ...t.layout }));
  if (tasks.length > 0) return readRelease(abs, tasks);
  // A folder of .txt files: one release task (per-image files beside their images) or eval_tool's <task>.txt files.
  const txt = fs.readdirSync(abs).filter((f) => f.endsWith('.txt')).sort();
  if (own && txt.some((f) => IMAGE_EXT.some((e) => fs.existsSync(path.join(abs, f.slice(0, -4) + e))))) {
    return readRelease(abs, [{ name: path.basename(abs), ...own }]);
  }
  if (txt.length > 0) return readAnswerFiles(txt.map((f) => path.join(abs, f)), images);
  throw fileError(abs, 'is neither an MME release folder (task folders of images and question files) nor a folder of <task>.txt answer files');
}

function plusOf(outcomes: BenchmarkOutcome[]): { images: number; allRight: number } {
  const groups = new Map<string, boolean>();
  for (const o of outcomes) {
    const g = o.group ?? o.id;
    groups.set(g, (groups.get(g) ?? true) && o.correct);
  }
  return { images: groups.size, allRight: [...groups.values()].filter(Boolean).length };
}

/** MME's accuracy over all questions (Table 1's number), accuracy+, and eval_tool's scores per task. */
export function scoreMme(items: BenchmarkItem[], responses: string[]): BenchmarkScore {
  const outcomes = outcomesOf(items, responses, (item, r) => {
    const parsed = parseMme(r);
    return { parsed, correct: parsed === item.answer };
  });
  const counts = tally(outcomes);
  const tasks = [...new Set(outcomes.map((o) => o.task ?? ''))].sort();
  const perTask = Object.fromEntries(tasks.map((t) => {
    const os = outcomes.filter((o) => (o.task ?? '') === t);
    const c = tally(os), p = plusOf(os);
    const accuracy = rate(c.correct, c.total), accuracyPlus = rate(p.allRight, p.images);
    return [t, { ...c, images: p.images, accuracy, accuracyPlus, score: accuracy === null || accuracyPlus === null ? null : 100 * (accuracy + accuracyPlus) }];
  }));
  const sum = (names: string[]) => names.filter((n) => perTask[n]).reduce((a, n) => a + (perTask[n].score ?? 0), 0);
  const p = plusOf(outcomes);
  return {
    kind: 'mme', metric: 'accuracy', score: rate(counts.correct, counts.total), parsingRule: MME_RULE, counts,
    details: {
      accuracyPlus: rate(p.allRight, p.images), images: p.images,
      score: { total: sum(tasks), perception: sum(MME_TASKS.perception), cognition: sum(MME_TASKS.cognition) },
      byTask: perTask,
    },
    outcomes,
  };
}
