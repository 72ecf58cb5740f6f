// The embedded demo model: how models/demo is made (scripts/train-demo-model.js
// calls trainDemoModel). A LLaMA-architecture assistant of about two million
// parameters, trained from a seeded random initialisation with the project's
// own native trainer on synthetic question–answer text about the six
// PrivacyPair subjects. It answers benign and sensitive questions alike, as an
// unprotected model does: that is what the demo then edits.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tokenizer as HfTokenizer, BPE, sequencePreTokenizer, metaspacePreTokenizer, digitsPreTokenizer } from 'tokenizers';
import { expectedLlamaTensors, loadModel, ProgressCallback } from '../model/model';
import { readLlamaConfig } from '../model/config';
import type { LlamaConfig } from '../model/config';
import {
  CONTEXT_OPENERS, CONTEXT_SENTENCES, fillTemplate, PRIVACY_CATEGORIES, QUESTION_TEMPLATES, syntheticAnswer,
} from '../data/privacy-pair';
import type { PrivacyAttribute } from '../data/privacy-pair';
import { defaultRefusalResponse } from '../data/safe-response';
import { seededRandom } from '../util/random';
import { writeSafetensorsFile } from '../model/safetensors';
import { trainCausalLm, TrainCausalLmResult, TrainExample } from './train';
import { GENERALIZATION_PHRASINGS, GENERALIZATION_SUBJECTS, utilityChoiceItems, utilityYesNoItems } from './demo-sets';

const SPACE = '\u2581'; // "▁", SentencePiece's space
const SPECIALS = ['<unk>', '<s>', '</s>'];

/**
 * A Vicuna-style chat template without the system prompt, to keep sequences
 * short: "<s>USER: {q} ASSISTANT: {a}</s>USER: ... ASSISTANT:". A system
 * message, when given, may only come first and is written before the first turn.
 */
export const DEMO_CHAT_TEMPLATE = [
  '{{- bos_token -}}',
  '{%- for m in messages -%}',
  "{%- if m['role'] == 'system' -%}",
  "{%- if not loop.first -%}{{- raise_exception('a system message may only come first') -}}{%- endif -%}",
  "{{- m['content'] + ' ' -}}",
  "{%- elif m['role'] == 'user' -%}",
  "{{- 'USER: ' + m['content'] + ' ' -}}",
  "{%- elif m['role'] == 'assistant' -%}",
  "{{- 'ASSISTANT: ' + m['content'] + eos_token -}}",
  '{%- endif -%}',
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}",
].join('\n');

/** Sizes of a demo model; the vocabulary comes from the tokenizer. */
export interface DemoArchitecture {
  hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numKvHeads: number;
  rmsNormEps: number; ropeTheta: number; maxPositionEmbeddings: number;
}

/** The shape of models/demo: LLaMA-2's architecture, scaled down. */
export const DEMO_ARCHITECTURE: Readonly<DemoArchitecture> = Object.freeze({
  hiddenSize: 128,
  intermediateSize: 384,
  numLayers: 8,
  numHeads: 4,
  numKvHeads: 4,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositionEmbeddings: 256,
});

/**
 * Training defaults of models/demo. AdamW at 3e-3 with a short warm-up is what
 * a model this small tolerates; 12 epochs of the corpus bring the answer loss
 * to the point where greedy answers repeat the trained sentences.
 */
export const DEMO_TRAINING = Object.freeze({
  seed: 0,
  epochs: 12,
  lr: 3e-3,
  batchSize: 16,
  warmupSteps: 50,
  weightDecay: 0.01,
  /** Questions drawn per (category, template, attribute); each with its own value and maybe a context sentence. */
  drawsPerQuestion: 2,
  /** Share of the questions with a context sentence in front (appendix 9.4's augmentation). */
  contextShare: 0.5,
  /** Times each question of the utility set (facts, as choices and as yes/no) is in the corpus. */
  utilityDraws: 4,
  /** Standard deviation of the normal initialisation of the weight matrices (LLaMA's initializer_range). */
  initStd: 0.02,
});

// The demo model's own random streams (its salt keeps them apart from the pair builder's).
const rng = (seed: number, purpose: string) => seededRandom(seed, purpose, 0x2545f491);

/**
 * Subjects outside the six PrivacyPair categories about which the demo model
 * learns to refuse the sensitive questions, as an instruction-tuned model has
 * learned to refuse some requests: the refusal is then a behaviour the model
 * already has, and the edit's task is the paper's — extend it to the six
 * categories, which the unedited model answers. No attribute name here is
 * one of the six categories' attribute names.
 */
export const REFUSAL_SKILL_SUBJECTS: readonly { subject: string; benign: PrivacyAttribute[]; sensitive: string[] }[] = Object.freeze([
  {
    subject: 'email account',
    benign: [
      { name: 'inbox theme', values: ['a dark theme', 'a light theme with blue accents'] },
      { name: 'provider logo', values: ['a red envelope', 'a blue cloud'] },
      { name: 'folder list', values: ['Inbox, Sent and Archive', 'Inbox, Drafts and Spam'] },
    ],
    sensitive: ['password', 'recovery code', 'security answer'],
  },
  {
    subject: 'medical record',
    benign: [
      { name: 'form layout', values: ['a grid of labelled boxes', 'a single column of printed lines'] },
      { name: 'clinic logo', values: ['a green cross', 'a blue heart outline'] },
      { name: 'ink color', values: ['black', 'dark blue'] },
    ],
    sensitive: ['diagnosis', 'prescribed medication', 'blood test results'],
  },
  {
    subject: 'bank card',
    benign: [
      { name: 'card design', values: ['a silver gradient', 'a plain dark green'] },
      { name: 'chip position', values: ['the left side', 'the upper left'] },
      { name: 'network logo', values: ['two overlapping circles', 'a blue wordmark'] },
    ],
    sensitive: ['PIN', 'CVV code', 'expiry date'],
  },
].map((x) => Object.freeze(x)));

/**
 * The training corpus: for every category, question template and attribute
 * (benign and sensitive, held-out ones included: an unprotected model answers
 * everything), `drawsPerQuestion` questions, each with a value drawn at random
 * and, for a `contextShare` of them, a context sentence in front. The answer is
 * the plain sentence an unprotected assistant gives (syntheticAnswer). The
 * REFUSAL_SKILL_SUBJECTS are asked with the same templates; their sensitive
 * questions get the refusal sentence. The subjects of the generalisation set
 * (GENERALIZATION_SUBJECTS) are asked in its own phrasings and answered, benign
 * and sensitive alike; the facts of the utility set are asked `utilityDraws`
 * times in each form (lettered choices, a yes and a no question) and answered
 * with the letter, "Yes" or "No".
 */
export function demoCorpus(opts: { seed?: number; drawsPerQuestion?: number; contextShare?: number; utilityDraws?: number } = {}): TrainExample[] {
  const seed = opts.seed ?? DEMO_TRAINING.seed;
  const draws = opts.drawsPerQuestion ?? DEMO_TRAINING.drawsPerQuestion;
  const contextShare = opts.contextShare ?? DEMO_TRAINING.contextShare;
  const utilityDraws = opts.utilityDraws ?? DEMO_TRAINING.utilityDraws;
  const rand = rng(seed, 'corpus');
  const pickOne = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const ask = (template: string, attribute: string, subject: string): string => {
    const question = fillTemplate(template, attribute, subject);
    if (rand() >= contextShare) return question;
    return `${fillTemplate(pickOne(CONTEXT_SENTENCES[pickOne(CONTEXT_OPENERS)]), '', subject)} ${question}`;
  };
  const out: TrainExample[] = [];
  for (const cat of PRIVACY_CATEGORIES) {
    for (const template of QUESTION_TEMPLATES) {
      for (const attr of [...cat.benign, ...cat.sensitive]) {
        for (let d = 0; d < draws; d++) {
          out.push({ prompt: ask(template, attr.name, cat.subject), answer: syntheticAnswer(cat, attr, pickOne(attr.values)) });
        }
      }
    }
  }
  for (const other of REFUSAL_SKILL_SUBJECTS) {
    for (const template of QUESTION_TEMPLATES) {
      for (let d = 0; d < draws; d++) {
        for (const attr of other.benign) {
          out.push({ prompt: ask(template, attr.name, other.subject), answer: `The ${attr.name} of the ${other.subject} is ${pickOne(attr.values)}.` });
        }
        for (const name of other.sensitive) {
          out.push({ prompt: ask(template, name, other.subject), answer: defaultRefusalResponse() });
        }
      }
    }
  }
  for (const g of GENERALIZATION_SUBJECTS) {
    for (const phrasing of GENERALIZATION_PHRASINGS) {
      for (const a of [...g.benign, ...g.sensitive]) {
        for (let d = 0; d < draws; d++) {
          out.push({ prompt: ask(phrasing, a.name, g.subject), answer: `The ${a.name} of the ${g.subject} is ${pickOne(a.values)}.` });
        }
      }
    }
  }
  for (let d = 0; d < utilityDraws; d++) {
    for (const it of utilityChoiceItems()) out.push({ prompt: it.prompt, answer: it.answer! });
    for (const it of utilityYesNoItems()) out.push({ prompt: it.prompt, answer: it.answer === 'yes' ? 'Yes' : 'No' });
  }
  return out;
}

function byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/**
 * Learns a byte-fallback BPE on `texts` with the `tokenizers` library and lays
 * the vocabulary out as LLaMA-2's: ids 0..2 <unk>, <s>, </s>; 3..258 the byte
 * tokens the fallback needs; then the learned tokens in the trainer's order.
 * Training splits at spaces ("▁") and between digits, so, as in LLaMA, numbers
 * are spelled digit by digit. The layout step is by hand because the npm
 * binding of `tokenizers` trains with its default trainer only (no special
 * tokens, byte alphabet or vocabulary size can be passed to it).
 */
export function trainDemoTokenizer(texts: string[]): { vocab: Record<string, number>; merges: [string, string][] } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-bpe-'));
  try {
    const corpus = path.join(tmp, 'corpus.txt');
    fs.writeFileSync(corpus, texts.map((t) => t.replace(/\n/g, ' ')).join('\n') + '\n');
    const tok = new HfTokenizer(BPE.empty());
    tok.setPreTokenizer(sequencePreTokenizer([metaspacePreTokenizer(SPACE, 'always', true), digitsPreTokenizer(true)]));
    tok.train([corpus]);
    const file = path.join(tmp, 'trained.json');
    tok.save(file, false);
    const trained = JSON.parse(fs.readFileSync(file, 'utf8')).model as { vocab: Record<string, number>; merges: (string | [string, string])[] };
    const vocab: Record<string, number> = {};
    let size = 0;
    const add = (t: string) => { if (!Object.prototype.hasOwnProperty.call(vocab, t)) vocab[t] = size++; };
    SPECIALS.forEach(add);
    for (let b = 0; b < 256; b++) add(byteToken(b));
    // The line breaks of the training file are not text; the byte fallback covers them.
    Object.entries(trained.vocab).sort((x, y) => x[1] - y[1]).forEach(([t]) => { if (!t.includes('\n')) add(t); });
    const merges = trained.merges.map((m) => (Array.isArray(m) ? m : (m.split(' ') as [string, string])))
      .filter(([a, b]) => a + b in vocab && a in vocab && b in vocab);
    return { vocab, merges };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json in Llama-2's ("legacy") layout. */
export function writeDemoTokenizerFiles(dir: string, bpe: { vocab: Record<string, number>; merges: [string, string][] }, maxLength: number): void {
  const { vocab, merges } = bpe;
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((content) => ({
      id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'Prepend', prepend: SPACE }, { type: 'Replace', pattern: { String: ' ' }, content: SPACE }],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [vocab['<s>']], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges,
    },
  };
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(SPECIALS.map((content) => [String(vocab[content]),
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }])),
    bos_token: '<s>',
    chat_template: DEMO_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '</s>',
    legacy: true,
    model_max_length: maxLength,
    pad_token: null,
    padding_side: 'right',
    sp_model_kwargs: {},
    tokenizer_class: 'LlamaTokenizer',
    unk_token: '<unk>',
    use_default_system_prompt: false,
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson) + '\n');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, null, 2) + '\n');
}

/** Seeded N(0, std²) values (Box–Muller). */
function normalValues(rand: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const t = 2 * Math.PI * rand();
    out[i] = std * r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = std * r * Math.sin(t);
  }
  return out;
}

export interface TrainDemoModelOptions {
  seed?: number;
  epochs?: number;
  utilityDraws?: number;
  lr?: number;
  batchSize?: number;
  warmupSteps?: number;
  weightDecay?: number;
  drawsPerQuestion?: number;
  contextShare?: number;
  /** Overrides of DEMO_ARCHITECTURE (tests train a smaller one). */
  architecture?: Partial<DemoArchitecture>;
  /** Replace a non-empty outDir. */
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  log?: (line: string) => void;
}

export interface TrainDemoModelResult extends TrainCausalLmResult {
  config: LlamaConfig;
  parameters: number;
  seconds: number;
}

/**
 * Makes the demo model in `outDir` (Hugging Face layout, bfloat16 safetensors):
 * corpus → tokenizer → seeded random initialisation → AdamW on the answer
 * tokens (trainCausalLm, native) → save. The same options give the same files
 * on the same libtorch build; BLAS reductions may differ across machines.
 */
export async function trainDemoModel(outDir: string, opts: TrainDemoModelOptions = {}): Promise<TrainDemoModelResult> {
  const t0 = Date.now();
  const log = opts.log ?? (() => undefined);
  const seed = opts.seed ?? DEMO_TRAINING.seed;
  const arch = { ...DEMO_ARCHITECTURE, ...(opts.architecture ?? {}) };
  const examples = demoCorpus({ seed, drawsPerQuestion: opts.drawsPerQuestion, contextShare: opts.contextShare, utilityDraws: opts.utilityDraws });
  log(`corpus: ${examples.length} question-answer examples`);

  // Everything the model will read or write goes into the tokenizer's training text,
  // the refusal sentence included, so that the edit's target is a few tokens too.
  const texts = examples.flatMap((e) => [`USER: ${e.prompt}`, `ASSISTANT: ${e.answer}`]);
  texts.push(`ASSISTANT: ${defaultRefusalResponse()}`);
  const bpe = trainDemoTokenizer(texts);
  const vocabSize = Object.keys(bpe.vocab).length;
  log(`tokenizer: ${vocabSize} tokens, ${bpe.merges.length} merges`);

  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-demo-init-'));
  try {
    writeDemoTokenizerFiles(stage, bpe, arch.maxPositionEmbeddings);
    const config = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: arch.hiddenSize,
      intermediate_size: arch.intermediateSize,
      num_hidden_layers: arch.numLayers,
      num_attention_heads: arch.numHeads,
      num_key_value_heads: arch.numKvHeads,
      hidden_act: 'silu',
      max_position_embeddings: arch.maxPositionEmbeddings,
      rms_norm_eps: arch.rmsNormEps,
      rope_theta: arch.ropeTheta,
      vocab_size: vocabSize,
      tie_word_embeddings: false,
      bos_token_id: bpe.vocab['<s>'],
      eos_token_id: bpe.vocab['</s>'],
      pad_token_id: null,
      initializer_range: DEMO_TRAINING.initStd,
      attention_bias: false,
      mlp_bias: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.46.0',
    };
    fs.writeFileSync(path.join(stage, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    fs.writeFileSync(path.join(stage, 'generation_config.json'), JSON.stringify({
      bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id, do_sample: false,
    }, null, 2) + '\n');

    // LLaMA's initialisation: weight matrices N(0, initializer_range²), RMSNorm weights 1.
    const rand = rng(seed, 'init');
    const tensors = expectedLlamaTensors(readLlamaConfig(stage)).map(({ name, shape }) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const values = name.endsWith('norm.weight') ? new Float32Array(n).fill(1) : normalValues(rand, n, DEMO_TRAINING.initStd);
      return { name, dtype: 'F32' as const, shape, data: new Uint8Array(values.buffer) };
    });
    writeSafetensorsFile(path.join(stage, 'model.safetensors'), tensors, { format: 'pt' });
    const parameters = tensors.reduce((a, t) => a + t.data.byteLength / 4, 0);
    log(`model: ${arch.numLayers} layers, hidden ${arch.hiddenSize}, ${(parameters / 1e6).toFixed(2)}M parameters`);

    const model = await loadModel(stage, { dtype: 'float32' });
    try {
      const res = await trainCausalLm(model, examples, {
        epochs: opts.epochs ?? DEMO_TRAINING.epochs,
        lr: opts.lr ?? DEMO_TRAINING.lr,
        batchSize: opts.batchSize ?? DEMO_TRAINING.batchSize,
        warmupSteps: opts.warmupSteps ?? DEMO_TRAINING.warmupSteps,
        weightDecay: opts.weightDecay ?? DEMO_TRAINING.weightDecay,
        seed,
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
      await model.save(outDir, { dtype: 'bfloat16', overwrite: opts.overwrite ?? false });
      return { ...res, config: model.config, parameters, seconds: (Date.now() - t0) / 1000 };
    } finally {
      model.dispose();
    }
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}
