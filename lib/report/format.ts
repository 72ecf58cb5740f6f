// The shapes of the reports: what the demo's report.json and compare's
// report.json hold.
import type { GateLayerCounts } from '../../types/results';
import type { PrivacyPair } from '../data/prepare';
import type { EditReport } from '../method/gated-edit';
import type { DinmReport, ToxicLayerLocation } from '../method/dinm';
import type { RowId, SetResult } from '../eval/compare';

// Plain JSON (no typed arrays), so report.json reads back into exactly the
// object that was written.

export const REPORT_FORMAT = 'ngate.demo-report';
export const REPORT_VERSION = 2;
export const COMPARE_REPORT_FORMAT = 'ngate.compare-report';
export const COMPARE_REPORT_VERSION = 1;

/** Gate statistics of one layer, from masks learned for that layer alone (section 3.2.3). */
export interface ReportLayer extends GateLayerCounts {
  /** N of eq. 6. */
  pairCount: number;
  threshold: number;
  /** Per dimension: how many pairs had m_l < 0; M_l = negativeCounts / pairCount. */
  negativeCounts: number[];
  /** Mean per-pair losses at the last mask step. */
  meanLoss: { sensitive: number; benign: number; l1: number };
}

/** What every row was evaluated on, and where its score goes in the tables. */
export interface ReportSet {
  name: string;
  kind: string;
  /** Safety or Utility column of Tables 1 and 2, with its heading; null: reported, not tabled. */
  column: { group: 'safety' | 'utility'; label: string } | null;
  size: number;
  /** Where the questions came from (a benchmark's files, or the demo's own set). */
  source?: Record<string, unknown>;
}

/** One row of Tables 1 and 2: a method run from the unedited weights, and its results on every set. */
export interface ReportRow {
  id: RowId;
  label: string;
  edit?: EditReport | DinmReport;
  results: Record<string, SetResult>;
  seconds: { edit: number; evaluate: number };
}

/** The gates of the Neural Gate rows: their neuron counts per layer. */
export interface ReportGates { single?: GateLayerCounts[]; multi?: GateLayerCounts[] }

export interface DemoReport {
  format: typeof REPORT_FORMAT;
  version: typeof REPORT_VERSION;
  createdAt: string;
  model: {
    dir: string; numLayers: number; hiddenSize: number; intermediateSize: number; vocabSize: number;
    parameters: number; device: string; dtype: string;
  };
  settings: {
    seed: number;
    /** The single-layer rows' layer. */
    singleLayer: number;
    /** The multi-layer rows' layers (eq. 8). */
    multiLayers: number[];
    /** DINM's layer. */
    dinmLayer: number | null;
    /** Layers with single-layer masks, for figure 2(c)(d) and the choice of the single layer. */
    scanLayers: number[];
    /** How the layers were chosen, in words. */
    layerChoice: string;
    threshold: number;
    rows: RowId[];
    mask: Record<string, unknown>;
    edit: Record<string, unknown>;
    dinm: Record<string, unknown>;
    evaluate: Record<string, unknown>;
    pairs: Record<string, unknown>;
    sets: ReportSet[];
    /** α values of the sweep (figure 4), when it ran. */
    alphas: number[] | null;
  };
  data: {
    train: PrivacyPair[];
    test: PrivacyPair[];
    heldOut: PrivacyPair[];
    heldOutTemplates?: unknown;
    heldOutAttributes?: unknown;
  };
  /** One entry per scanned layer, in layer order. */
  layers: ReportLayer[];
  gates: ReportGates;
  dinmLocation: ToxicLayerLocation | null;
  rows: ReportRow[];
  /** Figure 4: per α, the gated single- and multi-layer rows evaluated on PrivacyPair-test. */
  alphaSweep: { alpha: number; rows: ReportRow[] }[] | null;
  /** Seconds per stage, and `total`. */
  timings: Record<string, number>;
}

export interface CompareReport {
  format: typeof COMPARE_REPORT_FORMAT;
  version: typeof COMPARE_REPORT_VERSION;
  createdAt: string;
  model: { dir: string; numLayers: number; hiddenSize: number; device: string; dtype: string };
  config: string | null;
  settings: Record<string, unknown> & { sets: ReportSet[] };
  layers: { single: number; multi: number[]; how: string; locate?: unknown };
  gates: ReportGates;
  dinmLocation: ToxicLayerLocation | null;
  train: PrivacyPair[];
  rows: ReportRow[];
  timings: Record<string, number>;
}
