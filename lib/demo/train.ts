// trainCausalLm: plain supervised fine-tuning of every weight on
// question–answer text, with the loss on the answer tokens only. It is how the
// embedded demo model is made (scripts/train-demo-model.js); it is not part of
// the Neural Gate method. The loop runs natively (native/model/train.cpp):
// AdamW, linear warm-up then a constant learning rate, one shuffle per epoch
// drawn from `seed`.
import type { NativeSequence } from '../../types/native';
import { renderQuery } from '../data/prepare';
import { NgateError } from '../util/errors';
import { expectedLlamaTensors } from '../model/model';
import type { Model, ProgressCallback } from '../model/model';

export interface TrainExample {
  /** The user's turn; it is wrapped in the model's chat template. */
  prompt: string;
  /** The assistant's answer: the only tokens the loss covers (with the EOS after it). */
  answer: string;
}

export interface TrainCausalLmOptions {
  /** Passes over the examples. */
  epochs: number;
  /** Peak AdamW learning rate. */
  lr: number;
  /** Examples per step; the loss is the mean over them of each example's mean answer-token cross-entropy. */
  batchSize: number;
  /** Steps of linear learning-rate warm-up from lr/warmupSteps to lr (default 0: none). */
  warmupSteps?: number;
  /** AdamW's decoupled weight decay (default 0). */
  weightDecay?: number;
  /** Seeds the order of the examples in each epoch (default 0). */
  seed?: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface TrainCausalLmResult {
  /** The loss of every optimiser step, in order. */
  losses: number[];
  /** Examples trained on, and their total / answer token counts (EOS included). */
  examples: number;
  tokens: number;
  answerTokens: number;
  steps: number;
}

function inputError(field: string, reason: string): NgateError {
  return new NgateError('ERR_INPUT', reason, { field });
}

function checkNumber(name: string, v: unknown, kind: 'positiveInt' | 'nonNegativeInt' | 'positive' | 'nonNegative'): number {
  const ok = typeof v === 'number' && Number.isFinite(v) && (
    kind === 'positiveInt' ? Number.isSafeInteger(v) && v >= 1
      : kind === 'nonNegativeInt' ? Number.isSafeInteger(v) && v >= 0
        : kind === 'positive' ? v > 0 : v >= 0);
  if (!ok) {
    const what = { positiveInt: 'a positive integer', nonNegativeInt: 'a non-negative integer', positive: 'a positive number', nonNegative: 'a non-negative number' }[kind];
    throw inputError(name, `must be ${what}, got ${JSON.stringify(v) ?? String(v)}`);
  }
  return v as number;
}

/**
 * Token ids of one training example: the chat-templated prompt (which writes
 * BOS itself), the answer, then EOS; `answerStart` is the first answer token.
 */
export async function encodeTrainExample(model: Model, example: TrainExample): Promise<{ ids: number[]; answerStart: number }> {
  const { prompt } = renderQuery(model, example.prompt);
  const promptIds = (await model.tokenizer.encode(prompt, { addSpecialTokens: false })).ids;
  const answerIds = (await model.tokenizer.encode(example.answer, { addSpecialTokens: false })).ids;
  if (answerIds.length === 0) throw inputError('answer', `${JSON.stringify(example.answer)} encodes to no tokens`);
  const eos = model.eosTokenIds[0];
  return { ids: [...promptIds, ...answerIds, ...(eos !== undefined ? [eos] : [])], answerStart: promptIds.length };
}

/**
 * Trains every weight of a float32 model with AdamW on answer-token
 * cross-entropy. The weights stay changed in `model` (save them with
 * `model.save(dir)`); a cancelled run leaves them part-trained.
 */
export async function trainCausalLm(model: Model, examples: TrainExample[], opts: TrainCausalLmOptions): Promise<TrainCausalLmResult> {
  if (!opts || typeof opts !== 'object') throw inputError('opts', 'must be an object with epochs, lr and batchSize');
  const epochs = checkNumber('epochs', opts.epochs, 'positiveInt');
  const lr = checkNumber('lr', opts.lr, 'positive');
  const batchSize = checkNumber('batchSize', opts.batchSize, 'positiveInt');
  const warmupSteps = checkNumber('warmupSteps', opts.warmupSteps ?? 0, 'nonNegativeInt');
  const weightDecay = checkNumber('weightDecay', opts.weightDecay ?? 0, 'nonNegative');
  const seed = checkNumber('seed', opts.seed ?? 0, 'nonNegativeInt');
  if (model.disposed) throw new NgateError('ERR_DISPOSED', 'the model has been disposed');
  if (model.dtype !== 'float32') {
    throw new NgateError('ERR_INPUT', `training needs a float32 model, this one was loaded as ${model.dtype}: load it with { dtype: 'float32' }`, { field: 'dtype' });
  }
  if (!Array.isArray(examples) || examples.length === 0) throw inputError('examples', 'must be a non-empty array of { prompt, answer }');
  examples.forEach((e, i) => {
    if (!e || typeof e !== 'object') throw inputError(`examples[${i}]`, 'must be an object { prompt, answer }');
    for (const f of ['prompt', 'answer'] as const) {
      if (typeof e[f] !== 'string' || e[f].trim() === '') throw inputError(`examples[${i}].${f}`, 'must be a non-empty string');
    }
  });

  const sequences: NativeSequence[] = [];
  let tokens = 0;
  let answerTokens = 0;
  const V = model.config.vocabSize;
  for (const [i, e] of examples.entries()) {
    let enc: { ids: number[]; answerStart: number };
    try {
      enc = await encodeTrainExample(model, e);
    } catch (err) {
      if (err instanceof NgateError) throw new NgateError(err.code, `examples[${i}]: ${err.message}`, { cause: err });
      throw err;
    }
    const bad = enc.ids.find((id) => id >= V);
    if (bad !== undefined) throw inputError(`examples[${i}]`, `token id ${bad} is outside the model's vocabulary of ${V}`);
    tokens += enc.ids.length;
    answerTokens += enc.ids.length - enc.answerStart;
    sequences.push({ ids: Int32Array.from(enc.ids), subjectPositions: new Int32Array(0), answerStart: enc.answerStart });
  }

  const onProgress = opts.onProgress;
  let res: { losses: number[] };
  try {
    res = await model.runNative(opts.signal, (native, token) => native.trainLm(sequences, {
      epochs, lr, weightDecay, batchSize, warmupSteps, seed, padId: model.padTokenId,
    }, token, onProgress ? (done, total) => onProgress({ stage: 'train', done, total }) : undefined));
  } finally {
    // Every weight may have moved, even in a run that was cancelled part-way.
    for (const { name } of expectedLlamaTensors(model.config)) model.editedTensors.add(name);
  }
  return { losses: res.losses, examples: examples.length, tokens, answerTokens, steps: res.losses.length };
}
