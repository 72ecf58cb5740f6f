// What the benchmark readers share: checked paths, readable errors, and the
// tally every scorer starts from.
import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from '../util/errors';
import type { BenchmarkCounts, BenchmarkItem, BenchmarkOutcome } from './types';
import { parseJson } from '../util/json';

export function fileError(file: string, reason: string, field?: string): NgateError {
  return new NgateError('ERR_INPUT', reason, { file, ...(field !== undefined ? { field } : {}) });
}

/** An existing path, absolute; `what` names it in the error. */
export function existing(p: string, what: string, kind?: 'file' | 'dir'): string {
  if (typeof p !== 'string' || p === '') throw new NgateError('ERR_INPUT', `${what} must be a path`, { field: what });
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) throw new NgateError('ERR_MISSING_FILE', `${what} not found`, { file: abs });
  const st = fs.statSync(abs);
  if (kind === 'file' && !st.isFile()) throw new NgateError('ERR_INPUT', `${what} is not a file`, { file: abs });
  if (kind === 'dir' && !st.isDirectory()) throw new NgateError('ERR_INPUT', `${what} is not a folder`, { file: abs });
  return abs;
}

export function readJson(file: string): unknown {
  const text = fs.readFileSync(file, 'utf8');
  try {
    return parseJson(text);
  } catch (e) {
    throw fileError(file, `not valid JSON: ${(e as Error).message}`);
  }
}

/** The first of `candidates` that is a file; an error naming them all otherwise. */
export function findImage(candidates: string[], file: string, where: string): string {
  for (const c of candidates) if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  throw new NgateError('ERR_MISSING_FILE', `${where}: image not found (looked for ${candidates.join(', ')})`, { file });
}

export function tally(outcomes: BenchmarkOutcome[]): BenchmarkCounts {
  const correct = outcomes.filter((o) => o.correct).length;
  const unparseable = outcomes.filter((o) => o.parsed === null).length;
  return { total: outcomes.length, correct, wrong: outcomes.length - correct - unparseable, unparseable };
}

export function rate(n: number, d: number): number | null {
  return d === 0 ? null : n / d;
}

/** Outcomes from items and their raw answers, parsed and judged by `judge`. */
export function outcomesOf(items: BenchmarkItem[], responses: string[],
  judge: (item: BenchmarkItem, response: string) => { parsed: string | null; correct: boolean }): BenchmarkOutcome[] {
  if (!Array.isArray(responses) || responses.length !== items.length) {
    throw new NgateError('ERR_INPUT', `must hold one answer per question (${items.length}), got ${Array.isArray(responses) ? responses.length : typeof responses}`, { field: 'responses' });
  }
  return items.map((item, i) => {
    if (typeof responses[i] !== 'string') throw new NgateError('ERR_INPUT', `must be a string, got ${typeof responses[i]}`, { field: `responses[${i}]` });
    const { parsed, correct } = judge(item, responses[i]);
    const o: BenchmarkOutcome = { id: item.id, prompt: item.prompt, response: responses[i], parsed, correct: parsed !== null && correct };
    if (item.task !== undefined) o.task = item.task;
    if (item.group !== undefined) o.group = item.group;
    if (item.image !== undefined) o.image = item.image;
    if (item.answer !== undefined) o.answer = item.answer;
    return o;
  });
}

/** Accuracy and counts per task, for the details of a report. */
export function byTask(outcomes: BenchmarkOutcome[]): Record<string, BenchmarkCounts & { accuracy: number | null }> {
  const tasks = [...new Set(outcomes.map((o) => o.task ?? ''))].sort();
  return Object.fromEntries(tasks.map((t) => {
    const c = tally(outcomes.filter((o) => (o.task ?? '') === t));
    return [t, { ...c, accuracy: rate(c.correct, c.total) }];
  }));
}
