// The sizes that drive memory and come from the input, each bounded before
// anything is allocated: an image's pixels and shape, a text file's bytes.
// Each limit has a default that no real input of this library reaches and an
// environment variable that raises it; the error names both.
import { NgateError, NgateErrorCode } from './errors';

export interface Limit { name: string; env: string; value: number; unit: string }

function fromEnv(env: string, fallback: number): number {
  const raw = process.env[env];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new NgateError('ERR_INPUT', `must be a positive number, got ${JSON.stringify(raw)}`, { field: env });
  return v;
}

/** The limits now in effect (read from the environment at each call, so a test or a long-lived process can change them). */
export function limits() {
  return {
    /** Bytes of a JSON, JSONL, YAML or text file the library reads whole (pairs, configs, tokenizer, reports). */
    textFileBytes: { name: 'the size of a text file', env: 'NGATE_MAX_TEXT_FILE_BYTES', value: fromEnv('NGATE_MAX_TEXT_FILE_BYTES', 1 << 30), unit: 'bytes' },
    /** Bytes of an image file (JPEG, PNG) before it is decoded. */
    imageFileBytes: { name: 'the size of an image file', env: 'NGATE_MAX_IMAGE_FILE_BYTES', value: fromEnv('NGATE_MAX_IMAGE_FILE_BYTES', 256 * 2 ** 20), unit: 'bytes' },
    /** Decoded pixels of an image (width × height). */
    imagePixels: { name: 'the pixels of an image', env: 'NGATE_MAX_IMAGE_PIXELS', value: fromEnv('NGATE_MAX_IMAGE_PIXELS', 100e6), unit: 'pixels' },
    /** Width or height of an image, decoded or after the resize. */
    imageSide: { name: 'the side of an image', env: 'NGATE_MAX_IMAGE_SIDE', value: fromEnv('NGATE_MAX_IMAGE_SIDE', 32768), unit: 'pixels' },
    /** The long side over the short side: a shortest-edge resize scales the long side by the same factor. */
    imageAspect: { name: 'the aspect ratio of an image', env: 'NGATE_MAX_IMAGE_ASPECT', value: fromEnv('NGATE_MAX_IMAGE_ASPECT', 50), unit: ': 1' },
    /** Bytes of the logits forward() returns (batch × length × vocabulary × 4). */
    logitsBytes: { name: 'the logits asked for', env: 'NGATE_MAX_LOGITS_BYTES', value: fromEnv('NGATE_MAX_LOGITS_BYTES', 2 ** 31), unit: 'bytes' },
  } satisfies Record<string, Limit>;
}

/** Throws when `value` is past `limit`: the error names what, the limit, and the variable that raises it. */
export function checkLimit(value: number, limit: Limit, code: NgateErrorCode, where: { file?: string; field?: string }): void {
  if (value <= limit.value) return;
  throw new NgateError(code, `${limit.name} is ${Math.round(value * 100) / 100}${limit.unit === ': 1' ? ': 1' : ` ${limit.unit}`}, ` +
    `past the limit of ${limit.value}${limit.unit === ': 1' ? ': 1' : ` ${limit.unit}`} (set ${limit.env} to raise it)`, where);
}
