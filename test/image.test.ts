// CLIP preprocessing (CLIPImageProcessor's steps from preprocessor_config.json)
// checked against values computed here, independently of the library.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { ImagePreprocessing, preprocessImage, readPreprocessorConfig, resizedSize } from '../lib/model/image';
import type { ClipVisionConfig } from '../lib/model/config';
import { makeTempDir } from './fixtures/checkpoint';
import { pilBicubicResize } from './reference/pil-resize';

const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];
const vision = (imageSize: number): ClipVisionConfig => ({
  hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numChannels: 3, imageSize, patchSize: 4, layerNormEps: 1e-5, hiddenAct: 'quick_gelu',
});

function clip(size: number): ImagePreprocessing {
  const dir = makeTempDir();
  fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({
    crop_size: { height: size, width: size }, do_center_crop: true, do_normalize: true, do_rescale: true, do_resize: true,
    image_mean: MEAN, image_std: STD, rescale_factor: 1 / 255, size: { shortest_edge: size }, resample: 3,
  }));
  return readPreprocessorConfig(dir, vision(size));
}

function rgbImage(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): Buffer {
  const out = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) out.set(pixel(x, y), (y * width + x) * 3);
  return out;
}

const encodePng = (rgb: Buffer, width: number, height: number) => sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
const norm = (v: number, c: number) => (v / 255 - MEAN[c]) / STD[c];

describe('CLIP preprocessing', () => {
  test('output size follows transformers (shortest edge scaled, the long edge rounded down)', () => {
    expect(resizedSize(480, 640, { shortestEdge: 336 })).toEqual({ height: 336, width: 448 });
    expect(resizedSize(640, 480, { shortestEdge: 336 })).toEqual({ height: 448, width: 336 });
    expect(resizedSize(333, 500, { shortestEdge: 336 })).toEqual({ height: 336, width: 504 });  // 504.5 → 504
    expect(resizedSize(10, 20, { height: 7, width: 9 })).toEqual({ height: 7, width: 9 });
  });

  test('an image whose short edge is already the target is only centre-cropped, rescaled and normalised, exactly', async () => {
    // 20 wide × 8 high, target 8: no resampling; the crop keeps columns 6..13.
    const rgb = rgbImage(20, 8, (x, y) => [(x * 13 + y * 7) % 256, (x * 5 + 200 - y * 11) & 255, (x * y * 3 + 17) % 256]);
    const out = await preprocessImage(await encodePng(rgb, 20, 8), clip(8), 'image');
    expect(out).toHaveLength(3 * 8 * 8);
    let maxDiff = 0;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 8; y++) {
        for (let x = 0; x < 8; x++) {
          const expected = norm(rgb[(y * 20 + x + 6) * 3 + c], c);
          maxDiff = Math.max(maxDiff, Math.abs(out[(c * 8 + y) * 8 + x] - expected));
        }
      }
    }
    expect(maxDiff).toBeLessThan(1e-6);
  });

  test('a flat colour stays that colour through the resize', async () => {
    const rgb = rgbImage(40, 30, () => [200, 100, 30]);
    const out = await preprocessImage(await encodePng(rgb, 40, 30), clip(8), 'image');
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < 64; i++) expect(Math.abs(out[c * 64 + i] - norm([200, 100, 30][c], c))).toBeLessThan(1.01 / 255 / STD[c]);
    }
  });

  test('the resize keeps the aspect ratio and the crop is centred: a tall red-over-blue image', async () => {
    // 30 × 60 → 8 × 16, then rows 4..11 of 16 are kept: the crop's top rows
    // come from the red half, its bottom rows from the blue half.
    const rgb = rgbImage(30, 60, (_x, y) => (y < 30 ? [255, 0, 0] : [0, 0, 255]));
    const out = await preprocessImage(await encodePng(rgb, 30, 60), clip(8), 'image');
    const at = (c: number, y: number, x: number) => out[(c * 8 + y) * 8 + x];
    for (const x of [0, 3, 7]) {
      for (const y of [0, 1]) {
        expect(at(0, y, x)).toBeCloseTo(norm(255, 0), 1);
        expect(at(2, y, x)).toBeCloseTo(norm(0, 2), 1);
      }
      for (const y of [6, 7]) {
        expect(at(0, y, x)).toBeCloseTo(norm(0, 0), 1);
        expect(at(2, y, x)).toBeCloseTo(norm(255, 2), 1);
      }
    }
  });

  test('shrinking: our resample stays within a level, on average, of PIL bicubic re-implemented here', async () => {
    // Exact PIL parity is not claimed (README): libvips' cubic and Pillow's
    // fixed-point cubic differ, most at the borders. This bounds the gap.
    const W = 64, H = 48;
    const rgb = rgbImage(W, H, (x, y) => [Math.round(127 + 120 * Math.sin(x / 3)), Math.round(127 + 120 * Math.cos(y / 4)), (x * 7 + y * 3) % 256]);
    const out = await preprocessImage(await encodePng(rgb, W, H), clip(18), 'image');  // 64×48 → 24×18 → crop 18×18 at x 3
    const pil = pilBicubicResize(rgb, W, H, 24, 18);
    let sum = 0, n = 0;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 18; y++) {
        for (let x = 0; x < 18; x++) {
          const ours = (out[(c * 18 + y) * 18 + x] * STD[c] + MEAN[c]) * 255;
          sum += Math.abs(ours - pil[(y * 24 + x + 3) * 3 + c]);
          n++;
        }
      }
    }
    expect(sum / n).toBeLessThan(1);
  });

  test('alpha is dropped and grey is expanded to three equal channels', async () => {
    const rgba = Buffer.alloc(8 * 8 * 4);
    for (let i = 0; i < 64; i++) rgba.set([10, 120, 230, i * 4], i * 4);
    const out = await preprocessImage(await sharp(rgba, { raw: { width: 8, height: 8, channels: 4 } }).png().toBuffer(), clip(8), 'image');
    expect(out[0]).toBeCloseTo(norm(10, 0), 5);
    expect(out[128]).toBeCloseTo(norm(230, 2), 5);
    const grey = await sharp(Buffer.alloc(64, 77), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
    const g = await preprocessImage(grey, clip(8), 'image');
    for (let c = 0; c < 3; c++) expect(g[c * 64 + 5]).toBeCloseTo(norm(77, c), 5);
  });

  test('without preprocessor_config.json, CLIP defaults at the tower size are used', () => {
    const p = readPreprocessorConfig(makeTempDir(), vision(12));
    expect(p.file).toBeNull();
    expect(p.size).toEqual({ shortestEdge: 12 });
    expect(p.crop).toEqual({ height: 12, width: 12 });
    expect(p.mean).toEqual(MEAN);
  });

  test('a preprocessor_config.json whose crop does not fit the vision tower is refused, naming the field', () => {
    const dir = makeTempDir();
    const file = path.join(dir, 'preprocessor_config.json');
    fs.writeFileSync(file, JSON.stringify({ crop_size: { height: 224, width: 224 }, size: { shortest_edge: 224 } }));
    expect(() => readPreprocessorConfig(dir, vision(336))).toThrow(/preprocessor_config.json: field "crop_size": must produce 336×336 images/);
    fs.writeFileSync(file, JSON.stringify({ image_std: [1, 2] }));
    expect(() => readPreprocessorConfig(dir, vision(336))).toThrow(/field "image_std": must be three numbers/);
  });
});
