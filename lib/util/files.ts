// Reading a path the user gave: only a regular file, and only up to a size.
// A FIFO or a device would block the read forever (and Ctrl-C with it), or
// never end (/dev/zero), so the path is stat'ed — which never blocks — before
// it is opened.
import * as fs from 'fs';
import { NgateError, NgateErrorCode } from './errors';
import { checkLimit, Limit, limits } from './limits';

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * The file's stats, when it is a regular file (links followed) no larger than
 * `limit`; else an NgateError with `code` that names the file.
 */
export function regularFile(file: string, code: NgateErrorCode, limit: Limit | null = limits().textFileBytes): fs.Stats {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    const missing = c === 'ENOENT' || c === 'ENOTDIR';
    throw new NgateError(missing ? 'ERR_MISSING_FILE' : code, missing ? 'file not found' : `cannot be read: ${c ?? (e as Error).message}`, { file, cause: e });
  }
  if (!st.isFile()) throw new NgateError(code, `is ${kindOf(st)}; a regular file is expected`, { file });
  if (limit) checkLimit(st.size, limit, code, { file });
  return st;
}

/** The bytes of a regular file of bounded size. */
export function readFileBounded(file: string, code: NgateErrorCode, limit: Limit = limits().textFileBytes): Buffer {
  regularFile(file, code, limit);
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new NgateError(code, `cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file, cause: e });
  }
}

/** The text of a regular file of bounded size (UTF-8, a byte-order mark dropped). */
export function readTextBounded(file: string, code: NgateErrorCode, limit: Limit = limits().textFileBytes): string {
  return readFileBounded(file, code, limit).toString('utf8').replace(/^\uFEFF/, '');
}

/** The same, without blocking the event loop. */
export async function readTextBoundedAsync(file: string, code: NgateErrorCode, limit: Limit = limits().textFileBytes): Promise<string> {
  regularFile(file, code, limit);
  try {
    return (await fs.promises.readFile(file, 'utf8')).replace(/^\uFEFF/, '');
  } catch (e) {
    throw new NgateError(code, `cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file, cause: e });
  }
}
