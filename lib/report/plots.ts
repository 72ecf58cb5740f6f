// The two pictures of figure 2, drawn with vega-lite: (c) how M_l is
// distributed over the dimensions of each layer and (d) the share of strongly
// active neurons per layer.
import type * as Vega from 'vega';
import type * as vl from 'vega-lite';
import type { Gate, MaskSet } from '../../types/results';
import { NgateError } from '../util/errors';
import { buildGate, DEFAULT_GATE_THRESHOLD } from '../method/gate';
import type { ReportLayer } from './format';
import { pct } from './tables';

// Figure 2(c): per layer, the dimensions binned by M_l.

/** M_l of one layer; with pairCount, binning works on exact counts. */
export interface LayerShare { layer: number; share: ArrayLike<number>; pairCount?: number; }

export type ShareSource = Gate | Gate[] | MaskSet | ReportLayer[] | LayerShare[];

function isGate(v: unknown): v is Gate {
  return typeof v === 'object' && v !== null && 'keep' in v && 'share' in v && 'layers' in v;
}

function isMaskSet(v: unknown): v is MaskSet {
  return typeof v === 'object' && v !== null && 'masks' in v && 'pairIds' in v;
}

/** M_l per layer from a gate, several (single-layer) gates, masks, or report layers. */
export function layerShares(src: ShareSource, threshold = DEFAULT_GATE_THRESHOLD): LayerShare[] {
  if (isMaskSet(src)) return layerShares(buildGate(src, { threshold, onWarning: () => undefined }));
  if (isGate(src)) {
    const d = src.hiddenSize;
    return src.layers.map((layer, i) => ({ layer, share: src.share.subarray(i * d, (i + 1) * d), pairCount: src.pairCount }));
  }
  if (!Array.isArray(src)) throw new NgateError('ERR_INPUT', 'expected a gate, masks or a list of layers', { field: 'src' });
  return (src as (Gate | ReportLayer | LayerShare)[]).flatMap((x): LayerShare[] => {
    if (isGate(x)) return layerShares(x);
    if ('negativeCounts' in x && Array.isArray(x.negativeCounts)) {
      return [{ layer: x.layer, share: x.negativeCounts.map((c) => c / x.pairCount), pairCount: x.pairCount }];
    }
    return [x as LayerShare];
  });
}

export interface ShareBin {
  layer: number;
  /** 0 is M = 0 (inactive); bin k ≥ 1 holds (k−1)/bins < M ≤ k/bins. */
  bin: number;
  label: string;
  dims: number;
  /** dims / hiddenSize. */
  share: number;
}

/**
 * Every layer's dimensions counted into bins of M_l: one bin for M = 0, then
 * `bins` right-closed bins, so with 10 bins τ = 0.3 falls on an edge and the
 * bins right of (0.2, 0.3] hold exactly the strongly active neurons.
 */
export function shareHistogram(layers: LayerShare[], bins = 10): ShareBin[] {
  const labels = ['0', ...Array.from({ length: bins }, (_, k) => `(${(k / bins).toFixed(1)}, ${((k + 1) / bins).toFixed(1)}]`)];
  const out: ShareBin[] = [];
  for (const { layer, share, pairCount } of layers) {
    const counts = new Array<number>(bins + 1).fill(0);
    for (let j = 0; j < share.length; j++) {
      const m = share[j];
      if (!(m > 0)) { counts[0]++; continue; }
      // With N known, work on the integer count: neg·bins/N is exact when it is a whole number.
      const x = pairCount ? (Math.round(m * pairCount) * bins) / pairCount : m * bins;
      counts[Math.min(bins, Math.max(1, Math.ceil(x)))]++;
    }
    counts.forEach((dims, bin) => out.push({ layer, bin, label: labels[bin], dims, share: share.length ? dims / share.length : 0 }));
  }
  return out;
}

// vega and vega-lite load with the first figure, not with the library: they
// take half a second to import and most programs never draw.
let renderer: Promise<{ vega: typeof Vega; vegaLite: typeof vl }> | null = null;
function loadRenderer(): Promise<{ vega: typeof Vega; vegaLite: typeof vl }> {
  renderer ??= Promise.all([import('vega'), import('vega-lite')]).then(([vega, vegaLite]) => ({ vega, vegaLite }));
  return renderer;
}

async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const { vega, vegaLite } = await loadRenderer();
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const VL_SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/**
 * Figure 2(c): a heatmap, layers down and bins of M_l across; a cell's colour
 * is the share of the layer's dimensions whose M_l falls in the bin.
 */
export async function maskShareSvg(src: ShareSource, opts: { threshold?: number; bins?: number; title?: string } = {}): Promise<string> {
  const threshold = opts.threshold ?? (isGate(src) ? src.threshold : DEFAULT_GATE_THRESHOLD);
  const hist = shareHistogram(layerShares(src, threshold), opts.bins ?? 10);
  const labels = [...new Set(hist.map((h) => h.label))];
  const values = hist.map((h) => ({ ...h, layerLabel: `layer ${h.layer}`, percent: pct(h.share) }));
  const layerOrder = [...new Set(values.map((v) => v.layerLabel))];
  const spec: vl.TopLevelSpec = {
    $schema: VL_SCHEMA,
    title: { text: opts.title ?? 'Share of pairs with m < 0 per dimension (M_l)', subtitle: `τ = ${threshold}: dimensions right of it are strongly active` },
    data: { values },
    width: Math.max(260, labels.length * 34),
    height: Math.max(40, layerOrder.length * 28),
    encoding: {
      x: { field: 'label', type: 'ordinal', sort: labels, title: 'M_l (share of pairs with m < 0)', axis: { labelAngle: -40 } },
      y: { field: 'layerLabel', type: 'ordinal', sort: layerOrder, title: null },
    },
    layer: [
      {
        mark: { type: 'rect' },
        encoding: {
          color: { field: 'share', type: 'quantitative', title: 'share of dims', scale: { scheme: 'viridis', domain: [0, 1] } },
          tooltip: [{ field: 'layerLabel' }, { field: 'label' }, { field: 'dims' }, { field: 'percent' }],
        },
      },
      {
        mark: { type: 'text', fontSize: 8 },
        encoding: {
          text: { field: 'dims', type: 'quantitative' },
          color: { condition: { test: 'datum.share > 0.5', value: 'black' }, value: 'white' },
        },
      },
    ],
  };
  return renderSvg(spec);
}

export interface StrongShareRow { layer: number; strongShare: number; }

/**
 * Figure 2(d): per layer, the share of strongly active neurons (M_l > τ),
 * with the edited layers marked.
 */
export async function strongShareSvg(src: StrongShareRow[] | Gate | Gate[], opts: { highlight?: number[]; threshold?: number; title?: string } = {}): Promise<string> {
  const rows: StrongShareRow[] = isGate(src) ? src.counts
    : (src as (StrongShareRow | Gate)[]).flatMap((x) => (isGate(x) ? x.counts : [x]));
  const highlight = new Set(opts.highlight ?? []);
  const values = rows.map((r) => ({
    layer: r.layer, layerLabel: String(r.layer), strongShare: r.strongShare,
    percent: pct(r.strongShare), role: highlight.has(r.layer) ? 'edited' : 'scanned',
  }));
  const order = values.map((v) => v.layerLabel);
  const spec: vl.TopLevelSpec = {
    $schema: VL_SCHEMA,
    title: { text: opts.title ?? 'Share of strongly active neurons per layer', subtitle: `M_l > τ = ${opts.threshold ?? DEFAULT_GATE_THRESHOLD}` },
    data: { values },
    width: Math.max(200, values.length * 36),
    height: 200,
    encoding: {
      x: { field: 'layerLabel', type: 'ordinal', sort: order, title: 'layer', axis: { labelAngle: 0 } },
      y: { field: 'strongShare', type: 'quantitative', title: 'strongly active share', axis: { format: '.0%' } },
    },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          color: { field: 'role', type: 'nominal', title: null, scale: { domain: ['scanned', 'edited'], range: ['#9ab', '#d62'] } },
          tooltip: [{ field: 'layer' }, { field: 'percent' }],
        },
      },
      { mark: { type: 'text', dy: -6, fontSize: 9 }, encoding: { text: { field: 'percent' } } },
    ],
  };
  return renderSvg(spec);
}
