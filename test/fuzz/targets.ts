// Fuzz targets: one function per reader of untrusted files, each taking the
// bytes of a file. A reader may refuse its input only with an NgateError; any
// other exception, a hang (Jazzer's --timeout) or an unbounded allocation
// (libFuzzer's -rss_limit_mb) is a finding. scripts/fuzz.js bundles this file
// for Jazzer.js; test/fuzz.test.ts replays the corpus through it under jest.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isNgateError } from '../../lib/util/errors';
import { readSafetensorsHeader, readSafetensorsTensor } from '../../lib/model/safetensors';
import { loadGate, loadMasks } from '../../lib/method/gate';
import { readPairsFileSync } from '../../lib/data/pairs-file';
import { dictGet, readTorchCheckpoint, stateDict } from '../../lib/model/torch-checkpoint';
import { readMiniGpt4Descriptor, readMiniGpt4Yaml } from '../../lib/model/minigpt4';
import { readModelConfig } from '../../lib/model/config';
import { zipStored } from '../fixtures/torch-save';

// Readers take paths: every input is written to one file per target in a
// private folder (tmpfs when there is one, so that an execution costs microseconds).
const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const dir = fs.mkdtempSync(path.join(base, 'ngate-fuzz-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
// The files a MiniGPT-4 YAML or descriptor names (seeds.ts uses these names),
// so that inputs get past the path checks into the settings themselves.
fs.mkdirSync(path.join(dir, 'Llama-2-7b-chat-hf'));
for (const f of ['pretrained_minigpt4_llama2_7b.pth', 'eva_vit_g.pth']) fs.writeFileSync(path.join(dir, f), '');

function asFile(name: string, data: Uint8Array): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, data);
  return file;
}

/** Runs `read`; an NgateError is a clean refusal, anything else propagates as a finding. */
export function refusesCleanly(read: () => unknown): void {
  try {
    read();
  } catch (e) {
    if (isNgateError(e)) return;
    throw e;
  }
}

/**
 * Each reader as the fuzzer drives it, given the path of a file holding the
 * input.
 */
export const READERS = {
  /** safetensors: the header, then the body of every tensor it lists. */
  safetensors(file: string): void {
    const header = readSafetensorsHeader(file);
    for (const entry of header.tensors.values()) readSafetensorsTensor(file, entry);
  },
  /** learnMask's masks file (safetensors with the masks format's metadata and tensors). */
  masks: (file: string) => { loadMasks(file); },
  /** buildGate's gate file. */
  gate: (file: string) => { loadGate(file); },
  /** The PrivacyPairs JSONL file. */
  pairs: (file: string) => { readPairsFileSync(file); },
  /** A torch.save file (.pth, pytorch_model.bin): the zip archive, then data.pkl and the state dict. */
  'torch-checkpoint'(file: string): void {
    const ckpt = readTorchCheckpoint(file);
    // MiniGPT-4's checkpoints keep the state dict under "model", as the loader reads them.
    stateDict(ckpt, dictGet(ckpt.root, 'model') !== undefined ? ['model'] : []);
  },
  /**
   * data.pkl alone, put inside a well-formed archive with one storage record:
   * the fuzzer spends its mutations on the pickle interpreter instead of the zip.
   */
  'torch-pickle'(file: string): void {
    const archive = zipStored([
      { name: 'archive/data.pkl', data: fs.readFileSync(file) },
      { name: 'archive/data/0', data: new Uint8Array(64) },
      { name: 'archive/version', data: Buffer.from('3\n') },
    ]);
    const pth = path.join(dir, 'pickle.pth');
    fs.writeFileSync(pth, archive);
    stateDict(readTorchCheckpoint(pth));
  },
  /** MiniGPT-4's eval YAML (paths in it resolved against the fuzz folder). */
  'minigpt4-yaml': (file: string) => { readMiniGpt4Yaml(file); },
  /** Our minigpt4.json descriptor. */
  'minigpt4-descriptor': (file: string) => { readMiniGpt4Descriptor(file); },
  /** A checkpoint's config.json (LLaMA or LLaVA), read from the folder as loadModel reads it. */
  'model-config': (file: string) => { readModelConfig(path.dirname(file)); },
} as const;
export type TargetName = keyof typeof READERS;

/** The file name each input is written under (some readers look at the extension). */
const FILE_NAMES: Record<TargetName, string> = {
  safetensors: 'model.safetensors', masks: 'masks.safetensors', gate: 'gate.safetensors', pairs: 'pairs.jsonl',
  'torch-checkpoint': 'model.pth', 'torch-pickle': 'data.pkl', 'minigpt4-yaml': 'minigpt4_eval.yaml',
  'minigpt4-descriptor': 'minigpt4.json', 'model-config': 'config.json',
};

/** Writes `data` where the fuzzer's inputs go and reads it with the reader of `name`; throws what the reader throws. */
export function readInput(name: TargetName, data: Uint8Array): void {
  READERS[name](asFile(FILE_NAMES[name], data));
}

/** The fuzz function of `name`: only an NgateError may come back from the reader. */
export function target(name: TargetName): (data: Uint8Array) => void {
  return (data) => refusesCleanly(() => readInput(name, data));
}

// The exports Jazzer.js calls (-f <name>).
export const safetensors = target('safetensors');
export const masks = target('masks');
export const gate = target('gate');
export const pairs = target('pairs');
export const torchCheckpoint = target('torch-checkpoint');
export const torchPickle = target('torch-pickle');
export const minigpt4Yaml = target('minigpt4-yaml');
export const minigpt4Descriptor = target('minigpt4-descriptor');
export const modelConfig = target('model-config');
