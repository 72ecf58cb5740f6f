// @ngate/core: Neural Gate privacy editing of LLaMA-family and vision-language models.
export { loadModel, Model, expectedLlamaTensors } from './model/model';
export type { Device, LoadOptions, ForwardOptions, ForwardResult, GenerateOptions, Generation, SaveOptions, Progress, ProgressCallback } from './model/model';
export { learnMask, MASK_DEFAULTS } from './method/learn-mask';
export type { LearnMaskOptions } from './method/learn-mask';
export { buildGate, mergeGates, saveGate, loadGate, saveMasks, loadMasks, DEFAULT_GATE_THRESHOLD } from './method/gate';
export { gatedEdit, EDIT_DEFAULTS } from './method/gated-edit';
export type { GatedEditOptions, EditReport, FfnParam } from './method/gated-edit';
export { locateLayer } from './method/locate';
export type { LocateOptions, LocateResult, LocateRow } from './method/locate';
export { evaluate } from './method/evaluate';
export type { EvaluateOptions, EvaluationReport } from './method/evaluate';
export { validatePairs, preparePairs, fillBenignAnswers, encodeQuery } from './data/prepare';
export type { PrivacyPair, PreparedPair, PreparedSequence } from './data/prepare';
export { makeRefusalMatcher, isRefusal } from './method/refusal';
export { PAPER_REFUSAL_PREFIXES, defaultRefusalResponse } from './data/safe-response';
export type { RefusalMatcher } from './method/refusal';
export { privacyEditScores, spyBenchScores } from './method/metrics';
export type { Outcome, Scores, PrivacyEditScores, SpyOutcome } from './method/metrics';
export type { MaskSet, MaskLoss, Gate, GateLayerCounts } from '../types/results';
export { parseLlamaConfig, readLlamaConfig, parseModelConfig, readModelConfig, parseLlavaConfig } from './model/config';
export type { LlamaConfig, LlavaConfig, ClipVisionConfig, ModelConfig, ModelDtype } from './model/config';
export { preprocessImage, readPreprocessorConfig } from './model/image';
export type { ImageInput, ImagePreprocessing } from './model/image';
export { Tokenizer } from './model/tokenizer';
export type { Encoded, ChatMessage } from './model/tokenizer';
export { NgateError } from './util/errors';
export { readSafetensorsHeader, writeSafetensorsFile, readSafetensorsTensor, encodeSafetensorsHeader } from './model/safetensors';
export type { SafetensorsDtype, TensorEntry, SafetensorsHeader } from './model/safetensors';
export { nativeInfo } from './model/native';
export {
  buildPrivacyPairs, PRIVACY_CATEGORIES, QUESTION_TEMPLATES, CONTEXT_OPENERS, CONTEXT_SENTENCES, PRIVACY_PAIR_TABLE3,
  DEFAULT_TEST_SHARE, fillTemplate, syntheticAnswer, parseQuery, generalizationLeaks,
} from './data/privacy-pair';
export type { PrivacyCategory, PrivacyAttribute, BuildOptions, PairDetails, PrivacyPairSplits, SplitName } from './data/privacy-pair';
export { readPairsFile, readPairsFileSync, writePairsFile, formatPairs, privacyPairSchema, PairsFileError } from './data/pairs-file';
export type { PairsFileIssue, ReadPairsOptions } from './data/pairs-file';
export { runDemo, demoModelDir, DEMO_DEFAULTS } from './demo/run';
export type { DemoOptions, DemoResult } from './demo/run';
export { writeReport, readReport, REPORT_FILES } from './report/folder';
export { maskShareSvg, strongShareSvg } from './report/plots';
export { summaryMarkdown } from './report/summary';
export { REPORT_FORMAT } from './report/format';
export type { DemoReport, ReportRun, ReportLayer } from './report/format';
export { trainCausalLm } from './demo/train';
export type { TrainExample, TrainCausalLmOptions, TrainCausalLmResult } from './demo/train';
export { trainDemoModel, demoCorpus, DEMO_ARCHITECTURE, DEMO_TRAINING, DEMO_CHAT_TEMPLATE, REFUSAL_SKILL_SUBJECTS } from './demo/demo-model';
export type { TrainDemoModelOptions, TrainDemoModelResult, DemoArchitecture } from './demo/demo-model';
