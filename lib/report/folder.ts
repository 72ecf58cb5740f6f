// The report folder: report.json, summary.md and the two figures, written
// atomically, and report.json read back.
import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { writeFileAtomic } from '../util/atomic-write';
import { DemoReport, REPORT_FORMAT, REPORT_VERSION } from './format';
import { maskShareSvg, strongShareSvg } from './plots';
import { summaryMarkdown } from './summary';

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
  writeFileAtomic(files.strongShare, await strongShareSvg(report.layers, { highlight: report.settings.editLayers, threshold: report.settings.threshold }));
  writeFileAtomic(files.summary, summaryMarkdown(report));
  writeFileAtomic(files.json, JSON.stringify(report, null, 2) + '\n');
  return files;
}

/** Reads a report.json written by writeReport. */
export function readReport(file: string): DemoReport {
  let raw: unknown;
  if (fs.existsSync(file)) regularFile(file, 'ERR_INPUT');  // a missing one: the read's own error below
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_MISSING_FILE' : 'ERR_INPUT';
    throw new NgateError(code, code === 'ERR_MISSING_FILE' ? 'does not exist' : `not valid JSON: ${(e as Error).message}`, { file });
  }
  const r = raw as Partial<DemoReport>;
  if (r?.format !== REPORT_FORMAT) throw new NgateError('ERR_INPUT', `is not a demo report (format ${JSON.stringify(r?.format)})`, { file, field: 'format' });
  if (r.version !== REPORT_VERSION) throw new NgateError('ERR_INPUT', `version ${JSON.stringify(r.version)} is not supported (this library reads ${REPORT_VERSION})`, { file, field: 'version' });
  for (const k of ['model', 'settings', 'data', 'layers', 'runs', 'timings'] as const) {
    if (r[k] === undefined || r[k] === null) throw new NgateError('ERR_INPUT', 'is missing', { file, field: k });
  }
  return r as DemoReport;
}
