// The report folders: the demo's (report.json, summary.md and the two
// figures) and compare's (report.json, summary.md), written atomically, and
// their report.json read back.
import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { writeFileAtomic } from '../util/atomic-write';
import { COMPARE_REPORT_FORMAT, COMPARE_REPORT_VERSION, CompareReport, DemoReport, REPORT_FORMAT, REPORT_VERSION } from './format';
import { maskShareSvg, strongShareSvg } from './plots';
import { compareSummaryMarkdown, summaryMarkdown } from './summary';
import { parseJson } from '../util/json';

// Files.

export const REPORT_FILES = { json: 'report.json', summary: 'summary.md', maskShare: 'mask-share.svg', strongShare: 'strong-share.svg' } as const;


/**
 * Writes the report folder: the pictures and summary.md first, report.json
 * last, so a folder with report.json in it is a finished report.
 */
export async function writeReport(dir: string, report: DemoReport): Promise<Record<keyof typeof REPORT_FILES, string>> {
  fs.mkdirSync(dir, { recursive: true });
  const files = Object.fromEntries(Object.entries(REPORT_FILES).map(([k, f]) => [k, path.join(dir, f)])) as Record<keyof typeof REPORT_FILES, string>;
  const shares = report.layers.length > 0 ? report.layers : [];
  writeFileAtomic(files.maskShare, await maskShareSvg(shares, { threshold: report.settings.threshold }));
  writeFileAtomic(files.strongShare, await strongShareSvg(report.layers, { highlight: [report.settings.singleLayer], threshold: report.settings.threshold }));
  writeFileAtomic(files.summary, summaryMarkdown(report));
  writeFileAtomic(files.json, JSON.stringify(report, null, 2) + '\n');
  return files;
}

function readJsonReport(file: string): Record<string, unknown> {
  let raw: unknown;
  if (fs.existsSync(file)) regularFile(file, 'ERR_INPUT');  // a missing one: the read's own error below
  try {
    raw = parseJson(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_MISSING_FILE' : 'ERR_INPUT';
    throw new NgateError(code, code === 'ERR_MISSING_FILE' ? 'does not exist' : `not valid JSON: ${(e as Error).message}`, { file });
  }
  if (typeof raw !== 'object' || raw === null) throw new NgateError('ERR_INPUT', 'is not a report (not a JSON object)', { file });
  return raw as Record<string, unknown>;
}

function checkReport(file: string, r: Record<string, unknown>, format: string, version: number, what: string, keys: string[]): void {
  if (r.format !== format) throw new NgateError('ERR_INPUT', `is not a ${what} (format ${JSON.stringify(r.format)})`, { file, field: 'format' });
  if (r.version !== version) throw new NgateError('ERR_INPUT', `version ${JSON.stringify(r.version)} is not supported (this library reads ${version})`, { file, field: 'version' });
  for (const k of keys) {
    if (r[k] === undefined || r[k] === null) throw new NgateError('ERR_INPUT', 'is missing', { file, field: k });
  }
}

/** Reads a report.json written by writeReport. */
export function readReport(file: string): DemoReport {
  const r = readJsonReport(file);
  checkReport(file, r, REPORT_FORMAT, REPORT_VERSION, 'demo report', ['model', 'settings', 'data', 'layers', 'rows', 'timings']);
  return r as unknown as DemoReport;
}

export const COMPARE_FILES = { json: 'report.json', summary: 'summary.md' } as const;

/** Writes compare's report folder: summary.md, then report.json (every raw answer). */
export function writeCompareReport(dir: string, report: CompareReport): Record<keyof typeof COMPARE_FILES, string> {
  fs.mkdirSync(dir, { recursive: true });
  const files = { json: path.join(dir, COMPARE_FILES.json), summary: path.join(dir, COMPARE_FILES.summary) };
  writeFileAtomic(files.summary, compareSummaryMarkdown(report));
  writeFileAtomic(files.json, JSON.stringify(report, null, 2) + '\n');
  return files;
}

/** Reads a report.json written by writeCompareReport. */
export function readCompareReport(file: string): CompareReport {
  const r = readJsonReport(file);
  checkReport(file, r, COMPARE_REPORT_FORMAT, COMPARE_REPORT_VERSION, 'compare report', ['model', 'settings', 'layers', 'rows', 'timings']);
  return r as unknown as CompareReport;
}
