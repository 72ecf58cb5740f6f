// ScienceQA (Lu et al. 2022, github.com/lupantech/ScienceQA): data/scienceqa/
// problems.json (pid → { question, choices, answer: index, hint, image:
// "image.png" | null, subject, … }) and pid_splits.json (split → pids), the
// images in images/<split>/<pid>/<image>. The paper scores 400 image
// questions (appendix 8.3): the questions with an image, of a split, with
// `limit` and `seed` choosing which. Asked in LLaVA-1.5's single-prediction
// layout (its llava_test_CQM-A questions with --single-pred-prompt):
// "Context: <hint>\n<question>\nA. <choice>\nB. <choice>…\nAnswer with the
// option's letter from the given choices directly." (no Context line for an
// empty hint); the letter is read by LLaVA's eval_science_qa.py rule.
import * as fs from 'fs';
import * as path from 'path';
import { byTask, existing, fileError, findImage, outcomesOf, rate, readJson, tally } from './common';
import { choiceLetter, MAX_CHOICES, parseChoiceLetter, SCIENCEQA_RULE } from './parse';
import type { BenchmarkItem, BenchmarkScore } from './types';

export const SCIENCEQA_INSTRUCTION = "Answer with the option's letter from the given choices directly.";

/** The question as LLaVA-1.5 asks it. */
export function scienceQaPrompt(question: string, choices: string[], hint = ''): string {
  const lines = hint.trim() !== '' ? [`Context: ${hint.trim()}`] : [];
  lines.push(question.trim(), ...choices.map((c, i) => `${choiceLetter(i)}. ${c}`), SCIENCEQA_INSTRUCTION);
  return lines.join('\n');
}

/**
 * The image questions of one split. `data` is the folder of problems.json and
 * pid_splits.json, or problems.json itself; `images` defaults to the images/
 * folder beside them and may be the split's folder or the folder of splits.
 */
export function readScienceQa(data: string, images?: string, split = 'test'): BenchmarkItem[] {
  const abs = existing(data, 'data');
  const dir = fs.statSync(abs).isFile() ? path.dirname(abs) : abs;
  const problemsFile = fs.statSync(abs).isFile() ? abs : existing(path.join(dir, 'problems.json'), 'problems.json', 'file');
  const splitsFile = existing(path.join(dir, 'pid_splits.json'), 'pid_splits.json (beside problems.json)', 'file');
  const imageDir = existing(images ?? path.join(dir, 'images'), 'images', 'dir');
  const problems = readJson(problemsFile) as Record<string, Record<string, unknown>>;
  if (typeof problems !== 'object' || problems === null || Array.isArray(problems)) throw fileError(problemsFile, 'must be an object of problems by pid');
  const splits = readJson(splitsFile) as Record<string, unknown>;
  if (typeof splits !== 'object' || splits === null || Array.isArray(splits)) throw fileError(splitsFile, 'must be an object of pid lists by split');
  const pids = splits[split];
  if (!Array.isArray(pids)) throw fileError(splitsFile, `has no split ${JSON.stringify(split)} (it has ${Object.keys(splits).join(', ')})`, split);
  const items: BenchmarkItem[] = [];
  for (const pid of pids) {
    const key = String(pid);
    const p = problems[key];
    if (typeof p !== 'object' || p === null) throw fileError(problemsFile, `split ${split} names pid ${JSON.stringify(key)}, which is not in problems.json`);
    const field = (f: string) => `${key}.${f}`;
    if (p.image === null || p.image === undefined) continue;  // a text-only question
    if (typeof p.image !== 'string' || p.image === '') throw fileError(problemsFile, 'must be a file name or null', field('image'));
    if (typeof p.question !== 'string' || p.question.trim() === '') throw fileError(problemsFile, 'must be a non-empty string', field('question'));
    const choices = p.choices;
    if (!Array.isArray(choices) || choices.length < 2 || choices.length > MAX_CHOICES || choices.some((c) => typeof c !== 'string')) {
      throw fileError(problemsFile, `must be a list of 2 to ${MAX_CHOICES} strings`, field('choices'));
    }
    const answer = p.answer;
    if (typeof answer !== 'number' || !Number.isInteger(answer) || answer < 0 || answer >= choices.length) {
      throw fileError(problemsFile, `must be the index of the right choice (0 to ${choices.length - 1}), got ${JSON.stringify(answer)}`, field('answer'));
    }
    const hint = p.hint === undefined || p.hint === null ? '' : p.hint;
    if (typeof hint !== 'string') throw fileError(problemsFile, 'must be a string', field('hint'));
    const image = findImage([path.join(imageDir, key, p.image), path.join(imageDir, split, key, p.image)], problemsFile, `pid ${key}`);
    const item: BenchmarkItem = {
      id: key, image, prompt: scienceQaPrompt(p.question, choices as string[], hint), answer: choiceLetter(answer), choices: choices as string[],
    };
    if (typeof p.subject === 'string') item.task = p.subject;
    items.push(item);
  }
  if (items.length === 0) throw fileError(problemsFile, `split ${JSON.stringify(split)} has no question with an image`);
  return items;
}

export function scoreScienceQa(items: BenchmarkItem[], responses: string[]): BenchmarkScore {
  const outcomes = outcomesOf(items, responses, (item, r) => {
    const parsed = parseChoiceLetter(r, item.choices?.length ?? MAX_CHOICES);
    return { parsed, correct: parsed === item.answer };
  });
  const counts = tally(outcomes);
  return {
    kind: 'scienceqa', metric: 'accuracy', score: rate(counts.correct, counts.total), parsingRule: SCIENCEQA_RULE, counts,
    details: { bySubject: byTask(outcomes) }, outcomes,
  };
}
