// Every file the library writes goes through a temporary name in the same
// folder and a rename, so a reader (or a crash, or Ctrl-C) never leaves or
// sees half a file.
import * as fs from 'fs';
import * as path from 'path';
import { NgateError } from './errors';

/** A temporary name beside `file`, unique to this process and call. */
export function tempNameBeside(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
}

/** Writes `text` to `file` atomically; ERR_WRITE names the file on failure. */
export function writeFileAtomic(file: string, text: string | Uint8Array): void {
  const tmp = tempNameBeside(file);
  try {
    fs.writeFileSync(tmp, text, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new NgateError('ERR_WRITE', `cannot write: ${(e as Error).message}`, { file, cause: e });
  }
}
