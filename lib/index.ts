// @ngate/core: Neural Gate privacy editing of LLaMA-family and vision-language models.
export { loadModel, Model, expectedLlamaTensors } from './model';
export type { Device, LoadOptions, ForwardOptions, ForwardResult, GenerateOptions, Generation, SaveOptions, Progress, ProgressCallback } from './model';
export { learnMask, MASK_DEFAULTS } from './learn-mask';
export type { LearnMaskOptions } from './learn-mask';
export { buildGate, mergeGates, saveGate, loadGate, saveMasks, loadMasks, DEFAULT_GATE_THRESHOLD } from './gate';
export { gatedEdit, EDIT_DEFAULTS } from './gated-edit';
export type { GatedEditOptions, EditReport, FfnParam } from './gated-edit';
export { locateLayer } from './locate';
export type { LocateOptions, LocateResult, LocateRow } from './locate';
export { evaluate } from './evaluate';
export type { EvaluateOptions, EvaluationReport } from './evaluate';
export { validatePairs, preparePairs, fillBenignAnswers, encodeQuery } from './data';
export type { PrivacyPair, PreparedPair, PreparedSequence } from './data';
export { PAPER_REFUSAL_PREFIXES, makeRefusalMatcher, isRefusal, defaultRefusalResponse } from './refusal';
export type { RefusalMatcher } from './refusal';
export { privacyEditScores, spyBenchScores } from './metrics';
export type { Outcome, Scores, PrivacyEditScores, SpyOutcome } from './metrics';
export type { MaskSet, MaskLoss, Gate, GateLayerCounts } from '../types/results';
export { parseLlamaConfig, readLlamaConfig, parseModelConfig, readModelConfig, parseLlavaConfig } from './config';
export type { LlamaConfig, LlavaConfig, ClipVisionConfig, ModelConfig, ModelDtype } from './config';
export { preprocessImage, readPreprocessorConfig } from './image';
export type { ImageInput, ImagePreprocessing } from './image';
export { Tokenizer } from './tokenizer';
export type { Encoded, ChatMessage } from './tokenizer';
export { NgateError } from './errors';
export { readSafetensorsHeader, writeSafetensorsFile, readSafetensorsTensor, encodeSafetensorsHeader } from './safetensors';
export type { SafetensorsDtype, TensorEntry, SafetensorsHeader } from './safetensors';
export { nativeInfo } from './native';
export {
  buildPrivacyPairs, PRIVACY_CATEGORIES, QUESTION_TEMPLATES, CONTEXT_OPENERS, CONTEXT_SENTENCES, PRIVACY_PAIR_TABLE3,
  DEFAULT_TEST_SHARE, fillTemplate, syntheticAnswer, parseQuery, generalizationLeaks,
} from './privacy-pair';
export type { PrivacyCategory, PrivacyAttribute, BuildOptions, PairDetails, PrivacyPairSplits, SplitName } from './privacy-pair';
export { readPairsFile, readPairsFileSync, writePairsFile, formatPairs, privacyPairSchema, PairsFileError } from './pairs-file';
export type { PairsFileIssue, ReadPairsOptions } from './pairs-file';
export { runDemo, demoModelDir, DEMO_DEFAULTS } from './demo';
export type { DemoOptions, DemoResult } from './demo';
export { writeReport, readReport, maskShareSvg, strongShareSvg, summaryMarkdown, REPORT_FILES, REPORT_FORMAT } from './report';
export type { DemoReport, ReportRun, ReportLayer } from './report';
export { trainCausalLm } from './train';
export type { TrainExample, TrainCausalLmOptions, TrainCausalLmResult } from './train';
export { trainDemoModel, demoCorpus, DEMO_ARCHITECTURE, DEMO_TRAINING, DEMO_CHAT_TEMPLATE, REFUSAL_SKILL_SUBJECTS } from './demo-model';
export type { TrainDemoModelOptions, TrainDemoModelResult, DemoArchitecture } from './demo-model';
