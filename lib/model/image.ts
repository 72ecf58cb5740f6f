// Images for LLaVA: decoding with sharp (libvips), then the CLIP preprocessing
// of preprocessor_config.json (transformers' CLIPImageProcessor): resize so
// the shortest edge has `size.shortest_edge` pixels, centre crop, rescale,
// normalise with the file's mean and std, channels first.
//
// Resampling: transformers resizes with PIL's bicubic filter (resample = 3).
// We resize with libvips' bicubic (sharp's `kernel: 'cubic'`, Catmull-Rom,
// antialiased when shrinking). Both are cubic convolutions, but the two
// libraries do not round and window identically, so pixel values after a
// resize can differ by a few levels out of 255: exact PIL parity is not
// claimed. An image already at the target size is never resampled, and the
// crop, rescale and normalisation are exact.
import * as fs from 'fs';
import * as path from 'path';
import type Sharp from 'sharp';
import type { ClipVisionConfig } from './config';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { checkLimit, limits } from '../util/limits';
import { parseJson } from '../util/json';

/** An image as the API takes it: a file path or the bytes of a JPEG or PNG file. */
export type ImageInput = string | Buffer | Uint8Array;

export interface ImagePreprocessing {
  doResize: boolean;
  /** Resize target: the shortest edge, or an exact height × width. */
  size: { shortestEdge: number } | { height: number; width: number };
  doCenterCrop: boolean;
  crop: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  mean: [number, number, number];
  std: [number, number, number];
  /** The file the settings came from, or null when CLIP defaults were used. */
  file: string | null;
}

// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, CLIPImageProcessor's defaults.
const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

function fail(file: string, field: string, reason: string): never {
  throw new NgateError('ERR_CONFIG', reason, { file, field });
}

function readSize(v: unknown, file: string, field: string): ImagePreprocessing['size'] {
  if (typeof v === 'number') return { shortestEdge: v };  // old files: one int is the shortest edge
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (Number.isSafeInteger(o.shortest_edge) && (o.shortest_edge as number) > 0) return { shortestEdge: o.shortest_edge as number };
    if (Number.isSafeInteger(o.height) && Number.isSafeInteger(o.width) && (o.height as number) > 0 && (o.width as number) > 0) {
      return { height: o.height as number, width: o.width as number };
    }
  }
  fail(file, field, `must be {"shortest_edge": n} or {"height": h, "width": w}, got ${JSON.stringify(v)}`);
}

function triple(v: unknown, def: [number, number, number], file: string, field: string): [number, number, number] {
  if (v === undefined || v === null) return def;
  if (typeof v === 'number') return [v, v, v];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) return v as [number, number, number];
  fail(file, field, `must be three numbers, got ${JSON.stringify(v)}`);
}

/**
 * The preprocessing of `dir/preprocessor_config.json`; without the file,
 * CLIPImageProcessor's defaults at the vision tower's image size.
 */
export function readPreprocessorConfig(dir: string, vision: ClipVisionConfig): ImagePreprocessing {
  const file = path.join(dir, 'preprocessor_config.json');
  const S = vision.imageSize;
  if (!fs.existsSync(file)) {
    return {
      doResize: true, size: { shortestEdge: S }, doCenterCrop: true, crop: { height: S, width: S },
      doRescale: true, rescaleFactor: 1 / 255, doNormalize: true, mean: CLIP_MEAN, std: CLIP_STD, file: null,
    };
  }
  let j: Record<string, unknown>;
  regularFile(file, 'ERR_CONFIG');
  try {
    j = parseJson(fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '')) as Record<string, unknown>;
  } catch (e) {
    throw new NgateError('ERR_CONFIG', `invalid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new NgateError('ERR_CONFIG', 'must contain a JSON object', { file });
  const bool = (k: string, def: boolean): boolean => {
    const v = j[k];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') fail(file, k, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const out: ImagePreprocessing = {
    doResize: bool('do_resize', true),
    size: j.size === undefined || j.size === null ? { shortestEdge: S } : readSize(j.size, file, 'size'),
    doCenterCrop: bool('do_center_crop', true),
    crop: { height: S, width: S },
    doRescale: bool('do_rescale', true),
    rescaleFactor: typeof j.rescale_factor === 'number' ? j.rescale_factor : 1 / 255,
    doNormalize: bool('do_normalize', true),
    mean: triple(j.image_mean, CLIP_MEAN, file, 'image_mean'),
    std: triple(j.image_std, CLIP_STD, file, 'image_std'),
    file,
  };
  if (j.crop_size !== undefined && j.crop_size !== null) {
    const c = readSize(j.crop_size, file, 'crop_size');
    out.crop = 'shortestEdge' in c ? { height: c.shortestEdge, width: c.shortestEdge } : c;
  }
  if (out.std.some((x) => x === 0)) fail(file, 'image_std', 'must not contain 0');
  // What comes out must be what the vision tower takes.
  const final = out.doCenterCrop ? out.crop : ('shortestEdge' in out.size ? null : out.size);
  if (!final || final.height !== S || final.width !== S) {
    fail(file, out.doCenterCrop ? 'crop_size' : 'size', `must produce ${S}×${S} images, the vision tower's image_size`);
  }
  return out;
}

/** transformers' get_resize_output_image_size for a shortest-edge target (default_to_square = False). */
export function resizedSize(height: number, width: number, size: ImagePreprocessing['size']): { height: number; width: number } {
  if (!('shortestEdge' in size)) return { ...size };
  const short = Math.min(height, width), long = Math.max(height, width);
  const newShort = size.shortestEdge;
  const newLong = Math.floor((newShort * long) / short);
  return height <= width ? { height: newShort, width: newLong } : { height: newLong, width: newShort };
}

function describeInput(input: ImageInput, where: string): { file?: string; field?: string } {
  return typeof input === 'string' ? { file: input, field: where } : { field: where };
}

// sharp (libvips) is loaded when the first image is decoded, not when the
// library is imported: importing stays cheap, and text-only use never needs it.
let sharpLoading: Promise<typeof Sharp> | null = null;
function loadSharp(): Promise<typeof Sharp> {
  sharpLoading ??= import('sharp').then((m) => ((m as { default?: typeof Sharp }).default ?? (m as unknown as typeof Sharp)))
    .catch((e: unknown) => {
      sharpLoading = null;
      throw new NgateError('ERR_IMAGE', `images need the sharp package, which did not load: ${(e as Error).message}`, { cause: e });
    });
  return sharpLoading;
}

/**
 * Decodes a JPEG or PNG (path or bytes) and preprocesses it: Float32Array
 * [3, height, width], channels first, as CLIPImageProcessor's pixel_values.
 * `where` names the argument in errors (e.g. "images[2]").
 */
export async function preprocessImage(input: ImageInput, p: ImagePreprocessing, where: string): Promise<Float32Array> {
  let bytes: Buffer;
  if (typeof input === 'string') {
    if (fs.existsSync(input)) regularFile(input, 'ERR_IMAGE', limits().imageFileBytes);  // a missing one: read's own error below
    try {
      bytes = fs.readFileSync(input);
    } catch (e) {
      throw new NgateError('ERR_IMAGE', `cannot read the image: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { ...describeInput(input, where), cause: e });
    }
  } else if (input instanceof Uint8Array) {
    checkLimit(input.byteLength, limits().imageFileBytes, 'ERR_IMAGE', { field: where });
    bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  } else {
    throw new NgateError('ERR_INPUT', 'an image must be a file path, a Buffer or null', { field: where });
  }
  const sharp = await loadSharp();
  const lim = limits();
  let rgb: Buffer, height: number, width: number;
  try {
    // The image's size from its header, bounded before anything is decoded: a
    // tiny PNG can declare 60000 × 1 pixels, which a shortest-edge resize to
    // 336 would turn into 336 × 20,160,000 (19 GB). sharp's own pixel limit
    // catches many pixels, not a thin image that grows in the resize.
    const meta = await sharp(bytes, { failOn: 'error', limitInputPixels: false }).metadata();
    const w0 = meta.width ?? 0, h0 = meta.height ?? 0;
    const at = describeInput(input, where);
    if (!(w0 > 0 && h0 > 0)) throw new NgateError('ERR_IMAGE', 'the image declares no size', at);
    checkLimit(Math.max(w0, h0) / Math.min(w0, h0), lim.imageAspect, 'ERR_IMAGE', at);
    checkLimit(w0 * h0, lim.imagePixels, 'ERR_IMAGE', at);
    checkLimit(Math.max(w0, h0), lim.imageSide, 'ERR_IMAGE', at);
    if (p.doResize) {
      const t = resizedSize(h0, w0, p.size);
      checkLimit(Math.max(t.height, t.width), lim.imageSide, 'ERR_IMAGE', at);
      checkLimit(t.height * t.width, lim.imagePixels, 'ERR_IMAGE', at);
    }
    // Orientation from EXIF applied first, as transformers' load_image does;
    // alpha dropped and grey expanded, as PIL's convert("RGB") does.
    let img = sharp(bytes, { failOn: 'error', limitInputPixels: lim.imagePixels.value }).rotate();
    const decoded = await img.clone().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    height = decoded.info.height;
    width = decoded.info.width;
    rgb = decoded.data;
    if (p.doResize) {
      const target = resizedSize(height, width, p.size);
      if (target.height !== height || target.width !== width) {
        img = sharp(rgb, { raw: { width, height, channels: 3 } });
        rgb = await img.resize({ width: target.width, height: target.height, fit: 'fill', kernel: 'cubic' }).raw().toBuffer();
        height = target.height;
        width = target.width;
      }
    }
  } catch (e) {
    if (e instanceof NgateError) throw e;
    throw new NgateError('ERR_IMAGE', `cannot decode the image (JPEG or PNG expected): ${(e as Error).message}`, { ...describeInput(input, where), cause: e });
  }
  if (rgb.length !== height * width * 3) {
    throw new NgateError('ERR_IMAGE', 'the decoded image does not have three colour channels', describeInput(input, where));
  }
  // Centre crop (transformers' center_crop: offsets rounded down, zero padding if the image is smaller).
  const H = p.doCenterCrop ? p.crop.height : height, W = p.doCenterCrop ? p.crop.width : width;
  checkLimit(H * W, lim.imagePixels, 'ERR_IMAGE', describeInput(input, where));
  const top = Math.floor((height - H) / 2), left = Math.floor((width - W) / 2);
  const out = new Float32Array(3 * H * W);
  const scale = p.doRescale ? p.rescaleFactor : 1;
  for (let c = 0; c < 3; c++) {
    const mean = p.doNormalize ? p.mean[c] : 0, std = p.doNormalize ? p.std[c] : 1;
    for (let y = 0; y < H; y++) {
      const sy = y + top;
      for (let x = 0; x < W; x++) {
        const sx = x + left;
        const inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
        const v = inside ? rgb[(sy * width + sx) * 3 + c] : 0;
        // float32 steps as transformers' numpy path: rescale, then (x − mean) / std.
        out[(c * H + y) * W + x] = (Math.fround(v * scale) - mean) / std;
      }
    }
  }
  return out;
}
