/**
 * One error type for everything the library rejects, so callers can branch on
 * `code` and always see which file (and field) was at fault.
 */
export class NgateError extends Error {
  readonly code: string;
  readonly file?: string;
  readonly field?: string;

  /**
   * `message` is the bare reason; the file and field, when given, are put in
   * front of it so every message reads `file: field "x": reason`.
   */
  constructor(code: string, message: string, opts: { file?: string; field?: string; cause?: unknown } = {}) {
    const prefix = (opts.file !== undefined ? `${opts.file}: ` : '') + (opts.field !== undefined ? `field "${opts.field}": ` : '');
    super(prefix + message);
    this.name = 'NgateError';
    // Set by hand, as ES2022's `new Error(msg, { cause })` would, so this also compiles for older targets.
    if (opts.cause !== undefined) Object.defineProperty(this, 'cause', { value: opts.cause, writable: true, configurable: true });
    this.code = code;
    if (opts.file !== undefined) this.file = opts.file;
    if (opts.field !== undefined) this.field = opts.field;
  }
}

/** The error to throw when an AbortSignal fires; named like the DOM's so `err.name === 'AbortError'` checks work. */
export function abortError(): NgateError {
  const err = new NgateError('ERR_ABORTED', 'the operation was aborted');
  err.name = 'AbortError';
  return err;
}
