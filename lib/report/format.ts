// The demo report's shape: what report.json holds.
import type { GateLayerCounts } from '../../types/results';
import type { PrivacyPair } from '../data/prepare';
import type { EvaluationReport } from '../method/evaluate';
import type { EditReport } from '../method/gated-edit';

// The report's shape. Plain JSON (no typed arrays), so report.json reads back
// into exactly the object that was written.

export const REPORT_FORMAT = 'ngate.demo-report';
export const REPORT_VERSION = 1;

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

export type RunName = 'unedited' | 'neural-gate' | 'without-gate';

export interface ReportRun {
  name: RunName;
  /** Row label of the tables. */
  label: string;
  /** Whether the edit used the gate; null for the unedited model. */
  gated: boolean | null;
  edit?: EditReport;
  /** Scores and raw responses on the pairs the edit was trained on. */
  seen: EvaluationReport;
  /** Scores and raw responses on pairs with question templates and attributes kept out of training. */
  heldOut: EvaluationReport;
}

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
    /** Layers the edit (and its gate) covered. */
    editLayers: number[];
    /** Layers with single-layer masks, for figure 2(c)(d) and the choice of editLayers. */
    scanLayers: number[];
    /** Why editLayers are what they are, in words. */
    layerChoice: string;
    threshold: number;
    mask: Record<string, unknown>;
    edit: Record<string, unknown>;
    evaluate: Record<string, unknown>;
    pairs: Record<string, unknown>;
  };
  data: {
    train: PrivacyPair[];
    heldOut: PrivacyPair[];
    heldOutTemplates?: unknown;
    heldOutAttributes?: unknown;
  };
  /** One entry per scanned layer, in layer order. */
  layers: ReportLayer[];
  runs: ReportRun[];
  /** Seconds per stage, and `total`. */
  timings: Record<string, number>;
}
