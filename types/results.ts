// Result types shared by learnMask, buildGate, gatedEdit and the file helpers
// in lib/method/gate.ts. Plain data (typed arrays, numbers, strings) so they can be
// saved, merged and sent between processes without a model at hand.

/** The three terms of eq. 5 for one pair, at the last mask step. */
export interface MaskLoss {
  /** L_sen (eq. 3): cross-entropy towards r_safe on the sensitive query. */
  sensitive: number;
  /** L_benign (eq. 4): cross-entropy towards r_org on the benign query. */
  benign: number;
  /** λ·‖m_l − 1‖₁, the sparsity term. */
  l1: number;
}

/** learnMask's result: one learned vector m_l per pair and layer (eq. 2, 5, 8). */
export interface MaskSet {
  layers: number[];
  hiddenSize: number;
  pairIds: string[];
  /** Row-major [pairIds.length, layers.length, hiddenSize]. */
  masks: Float32Array;
  /** One per pair, in pairIds order. */
  losses: MaskLoss[];
  /** Where m_l was applied: the FFN output (default) or the whole block's output. */
  hookPoint?: 'ffn' | 'block';
  /** The options the masks were learned with, kept for provenance. */
  options?: Record<string, unknown>;
}

/** Neuron categories of section 3.2.3 for one layer; shares are of hiddenSize. */
export interface GateLayerCounts {
  layer: number;
  /** M_l[j] = 0: no pair needed dimension j sign-flipped. */
  inactive: number;
  /** 0 < M_l[j] ≤ τ. */
  weak: number;
  /** M_l[j] > τ: the dimensions the gate lets through (eq. 7). */
  strong: number;
  inactiveShare: number;
  weakShare: number;
  strongShare: number;
}

/** buildGate's result: the neural gate M_l of eq. 6 and its binary form M_l > τ. */
export interface Gate {
  layers: number[];
  hiddenSize: number;
  /** τ; the paper uses 0.3. */
  threshold: number;
  /** N in eq. 6. */
  pairCount: number;
  /** M_l, row-major [layers.length, hiddenSize]. */
  share: Float32Array;
  /** 1 where M_l > τ, else 0; same shape as share. */
  keep: Uint8Array;
  counts: GateLayerCounts[];
  /** Per [layer, dim]: how many pairs had m < 0. Integer counts are what make mergeGates exact. */
  negativeCounts?: Uint32Array;
  /** The pairs the gate was built from, when known; lets mergeGates refuse to count a pair twice. */
  pairIds?: string[];
}
