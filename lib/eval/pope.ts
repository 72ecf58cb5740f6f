// POPE (Li et al. 2023, github.com/AoiDragon/POPE): yes/no questions "Is
// there a <object> in the image?" about COCO val2014 images, released as
// output/coco/coco_pope_{random,popular,adversarial}.json, one JSON object a
// line: {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
// "text": "Is there a snowboard in the image?", "label": "yes"}.
import * as fs from 'fs';
import * as path from 'path';
import { byTask, existing, fileError, findImage, outcomesOf, rate, tally } from './common';
import { parsePope, popeOfficial, POPE_RULE } from './parse';
import type { BenchmarkItem, BenchmarkScore } from './types';
import { parseJson } from '../util/json';

export const POPE_VARIANTS = ['random', 'popular', 'adversarial'] as const;

/** The POPE files a path names: one file, or every coco_pope_<variant>.json in a folder. */
function popeFiles(data: string): { file: string; variant: string }[] {
  const abs = existing(data, 'data');
  const variantOf = (f: string) => /_pope_([a-z]+)\.jsonl?$/.exec(path.basename(f))?.[1] ?? path.basename(f).replace(/\.jsonl?$/, '');
  if (fs.statSync(abs).isFile()) return [{ file: abs, variant: variantOf(abs) }];
  const files = fs.readdirSync(abs).filter((f) => /_pope_[a-z]+\.jsonl?$/.test(f)).sort((a, b) => {
    const ia = POPE_VARIANTS.indexOf(variantOf(a) as typeof POPE_VARIANTS[number]), ib = POPE_VARIANTS.indexOf(variantOf(b) as typeof POPE_VARIANTS[number]);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  if (files.length === 0) throw fileError(abs, 'holds no POPE file (coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json)');
  return files.map((f) => ({ file: path.join(abs, f), variant: variantOf(f) }));
}

/**
 * The questions of POPE files. `images` is the folder of the COCO images the
 * files name (val2014); the image must exist. Every bad line is reported
 * with its number and field.
 */
export function readPope(data: string, images: string): BenchmarkItem[] {
  const imageDir = existing(images, 'images', 'dir');
  const items: BenchmarkItem[] = [];
  for (const { file, variant } of popeFiles(data)) {
    const seen = new Set<string>();
    fs.readFileSync(file, 'utf8').split(/\r?\n/).forEach((line, i) => {
      if (line.trim() === '') return;
      const where = `line ${i + 1}`;
      let v: Record<string, unknown>;
      try {
        v = parseJson(line) as Record<string, unknown>;
      } catch (e) {
        throw fileError(file, `${where}: not valid JSON: ${(e as Error).message}`);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fileError(file, `${where}: must be a JSON object`);
      const qid = v.question_id;
      if (typeof qid !== 'number' && typeof qid !== 'string') throw fileError(file, `${where}: must be a number or a string`, 'question_id');
      for (const f of ['image', 'text'] as const) {
        if (typeof v[f] !== 'string' || (v[f] as string).trim() === '') throw fileError(file, `${where}: must be a non-empty string`, f);
      }
      const label = typeof v.label === 'string' ? v.label.trim().toLowerCase() : v.label;
      if (label !== 'yes' && label !== 'no') throw fileError(file, `${where}: must be "yes" or "no", got ${JSON.stringify(v.label)}`, 'label');
      const id = `${variant}/${String(qid)}`;
      if (seen.has(id)) throw fileError(file, `${where}: question_id ${JSON.stringify(qid)} appears twice`, 'question_id');
      seen.add(id);
      const image = findImage([path.join(imageDir, v.image as string)], file, where);
      items.push({ id, image, prompt: v.text as string, answer: label, task: variant });
    });
  }
  if (items.length === 0) throw fileError(path.resolve(data), 'holds no questions');
  return items;
}

/** POPE's accuracy (unparseable answers wrong), and the numbers of POPE's own script. */
export function scorePope(items: BenchmarkItem[], responses: string[]): BenchmarkScore {
  const outcomes = outcomesOf(items, responses, (item, r) => {
    const parsed = parsePope(r);
    return { parsed, correct: parsed === item.answer };
  });
  const counts = tally(outcomes);
  // POPE's evaluate.py, as it is: every answer read, "yes" the positive class.
  let tp = 0, fp = 0, tn = 0, fn = 0;
  outcomes.forEach((o, i) => {
    const pred = popeOfficial(responses[i]);
    if (pred === 'yes' && o.answer === 'yes') tp++;
    else if (pred === 'yes') fp++;
    else if (o.answer === 'no') tn++;
    else fn++;
  });
  const precision = rate(tp, tp + fp), recall = rate(tp, tp + fn);
  return {
    kind: 'pope', metric: 'accuracy', score: rate(counts.correct, counts.total), parsingRule: POPE_RULE, counts,
    details: {
      byVariant: byTask(outcomes),
      official: {
        accuracy: rate(tp + tn, outcomes.length), precision, recall,
        f1: precision === null || recall === null || precision + recall === 0 ? null : (2 * precision * recall) / (precision + recall),
        yesRatio: rate(tp + fp, outcomes.length), tp, fp, tn, fn,
      },
    },
    outcomes,
  };
}
