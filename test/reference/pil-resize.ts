/**
 * PIL's bicubic resize (Image.resize(..., BICUBIC), the resampler
 * CLIPImageProcessor uses), re-implemented in float from the algorithm of
 * Pillow's Resample.c: a = -0.5 cubic, the kernel stretched by the scale when
 * shrinking (antialiasing), weights normalised per output pixel, horizontal
 * pass then vertical, each rounded to 8 bits. Pillow works in fixed point, so
 * this can differ from it by one level on rare ties.
 */
function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

function coefficients(inSize: number, outSize: number): { first: number; w: number[] }[] {
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = 2 * filterScale;
  return Array.from({ length: outSize }, (_, o) => {
    const center = (o + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w: number[] = [];
    for (let x = first; x < last; x++) w.push(cubic((x - center + 0.5) / filterScale));
    const sum = w.reduce((a, b) => a + b, 0);
    return { first, w: w.map((v) => v / sum) };
  });
}

/** RGB bytes width × height → outWidth × outHeight. */
export function pilBicubicResize(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  const cx = coefficients(width, outWidth), cy = coefficients(height, outHeight);
  const clip = (v: number) => Math.min(255, Math.max(0, Math.round(v)));
  const mid = new Uint8Array(outWidth * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < outWidth; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        cx[x].w.forEach((k, i) => { s += k * rgb[(y * width + cx[x].first + i) * 3 + c]; });
        mid[(y * outWidth + x) * 3 + c] = clip(s);
      }
    }
  }
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        cy[y].w.forEach((k, i) => { s += k * mid[((cy[y].first + i) * outWidth + x) * 3 + c]; });
        out[(y * outWidth + x) * 3 + c] = clip(s);
      }
    }
  }
  return out;
}
