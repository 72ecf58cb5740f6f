// What the benchmark readers produce and the scorers return.
import type { ParsingRule } from './parse';

export type BenchmarkKind = 'pope' | 'mme' | 'scienceqa' | 'mllmguard';

export const BENCHMARK_KINDS: readonly BenchmarkKind[] = Object.freeze(['pope', 'mme', 'scienceqa', 'mllmguard']);

/** One question of a benchmark, as read from its files. */
export interface BenchmarkItem {
  /** Unique within the benchmark: POPE "random/12", MME "existence/000000006040.jpg#0", ScienceQA's pid, MLLMGuard's row. */
  id: string;
  /** The image the question is about (an absolute path); absent for a text-only question (the demo's sets). */
  image?: string;
  /** The text the model is asked: the benchmark's question with any instruction it comes with. */
  prompt: string;
  /** The gold answer: "yes"/"no" (POPE, MME), a letter (ScienceQA); absent for MLLMGuard (a refusal is wanted). */
  answer?: string;
  /** POPE's variant (random, popular, adversarial), MME's task, ScienceQA's subject. */
  task?: string;
  /** Questions scored together: MME's image (accuracy+ needs all of an image's questions right). */
  group?: string;
  /** ScienceQA: the choices, in the order they are lettered. */
  choices?: string[];
}

/** One answered question. */
export interface BenchmarkOutcome {
  id: string;
  task?: string;
  group?: string;
  image?: string;
  prompt: string;
  answer?: string;
  /** The model's raw answer, as generated. */
  response: string;
  /** The answer the parsing rule read ("yes", "no", a letter, "refusal"/"answer"), or null when it could not read one. */
  parsed: string | null;
  /** Right (for MLLMGuard: refused). An unparseable answer is never right. */
  correct: boolean;
  generatedTokens?: number;
}

export interface BenchmarkCounts {
  total: number;
  correct: number;
  /** Parsed, but not the gold answer. */
  wrong: number;
  /** Not readable by the parsing rule: counted wrong, and here on their own. */
  unparseable: number;
}

export interface BenchmarkScore {
  kind: BenchmarkKind | string;
  /** What `score` is: accuracy, or RtA (MLLMGuard: the share of questions refused). */
  metric: 'accuracy' | 'rta';
  /** The number Table 1 shows; null when there was nothing to count. */
  score: number | null;
  parsingRule: ParsingRule;
  counts: BenchmarkCounts;
  /** What else the benchmark's own scoring reports (POPE: precision, recall, F1, yes ratio; MME: accuracy+, its score; per task). */
  details: Record<string, unknown>;
  outcomes: BenchmarkOutcome[];
}

export interface BenchmarkReport extends BenchmarkScore {
  source: {
    data: string;
    images: string | null;
    /** Questions the files hold (after the reader's filter: ScienceQA's image questions of the split, MLLMGuard's language). */
    available: number;
    limit: number | null;
    seed: number;
  };
  maxNewTokens: number;
}
