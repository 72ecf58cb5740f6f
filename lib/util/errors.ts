/**
 * What went wrong, by kind. Branch on `err.code`:
 * - ERR_INPUT: an argument or a field of one (pairs, options) is invalid; `field` names it
 * - ERR_USAGE: the command line is wrong (CLI only)
 * - ERR_CONFIG, ERR_CHECKPOINT, ERR_SAFETENSORS, ERR_MISSING_FILE, ERR_MISSING_TENSOR, ERR_TOKENIZER:
 *   a model's files are missing or malformed; `file` names the file
 * - ERR_PAIRS_FILE, ERR_MASK_FILE, ERR_GATE_FILE: a pairs, masks or gate file is malformed
 * - ERR_IMAGE: an image cannot be read or decoded
 * - ERR_DEVICE: the device or dtype cannot be used with this addon or machine
 * - ERR_ADDON, ERR_ADDON_BUILD: the native addon is missing, does not load, or failed to build
 * - ERR_SAVE, ERR_WRITE: an output cannot be written (or would overwrite what it must not)
 * - ERR_ABORTED: the AbortSignal fired (the rejection is the signal's reason when it has one)
 * - ERR_DISPOSED: the model was disposed before or during the call
 * - ERR_NATIVE: libtorch or the addon failed while running
 * - ERR_DIST: a process group could not form, or one of its collectives failed (a rank died or timed out)
 * - ERR_UNSUPPORTED: this build of the addon lacks the feature (e.g. distributed support without Gloo's headers)
 */
export type NgateErrorCode =
  | 'ERR_INPUT' | 'ERR_USAGE'
  | 'ERR_CONFIG' | 'ERR_CHECKPOINT' | 'ERR_SAFETENSORS' | 'ERR_MISSING_FILE' | 'ERR_MISSING_TENSOR' | 'ERR_TOKENIZER'
  | 'ERR_PAIRS_FILE' | 'ERR_MASK_FILE' | 'ERR_GATE_FILE'
  | 'ERR_IMAGE' | 'ERR_DEVICE' | 'ERR_ADDON' | 'ERR_ADDON_BUILD'
  | 'ERR_SAVE' | 'ERR_WRITE' | 'ERR_ABORTED' | 'ERR_DISPOSED' | 'ERR_NATIVE' | 'ERR_DIST' | 'ERR_UNSUPPORTED';

// A brand that survives two copies of the package in one process (two
// versions installed side by side), where instanceof cannot.
const BRAND = Symbol.for('@ngate/core.NgateError');

/**
 * One error type for everything the library rejects, so callers can branch on
 * `code` and always see which file (and field) was at fault.
 */
export class NgateError extends Error {
  readonly code: NgateErrorCode;
  readonly file?: string;
  readonly field?: string;

  /**
   * `message` is the bare reason; the file and field, when given, are put in
   * front of it so every message reads `file: field "x": reason`.
   */
  constructor(code: NgateErrorCode, message: string, opts: { file?: string; field?: string; cause?: unknown } = {}) {
    const prefix = (opts.file !== undefined ? `${opts.file}: ` : '') + (opts.field !== undefined ? `field "${opts.field}": ` : '');
    super(prefix + message);
    this.name = 'NgateError';
    // Set by hand, as ES2022's `new Error(msg, { cause })` would, so this also compiles for older targets.
    if (opts.cause !== undefined) Object.defineProperty(this, 'cause', { value: opts.cause, writable: true, configurable: true });
    this.code = code;
    if (opts.file !== undefined) this.file = opts.file;
    if (opts.field !== undefined) this.field = opts.field;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/** Whether `e` is an NgateError (of this or any other copy of the package), optionally with one of `codes`. */
export function isNgateError(e: unknown, ...codes: NgateErrorCode[]): e is NgateError {
  if (typeof e !== 'object' || e === null || (e as Record<symbol, unknown>)[BRAND] !== true) return false;
  return codes.length === 0 || codes.includes((e as NgateError).code);
}

/** The error to throw when an AbortSignal fires; named like the DOM's so `err.name === 'AbortError'` checks work. */
export function abortError(): NgateError {
  const err = new NgateError('ERR_ABORTED', 'the operation was aborted');
  err.name = 'AbortError';
  return err;
}
