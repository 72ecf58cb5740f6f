// The fuzzer's first seeds: one small valid file per target, written by the
// library's own writers (and the test fixtures' torch.save), so that a
// campaign starts from inputs that reach every reader's deepest checks.
// scripts/fuzz.js writes them before the committed corpus is merged.
import * as fs from 'fs';
import * as path from 'path';
import { writeSafetensorsFile } from '../../lib/model/safetensors';
import { gateFromCounts, saveGate, saveMasks } from '../../lib/method/gate';
import { formatPairs } from '../../lib/data/pairs-file';
import { dict, ordered, PyTensor, torchSave, tuple, pickleValue } from '../fixtures/torch-save';
import { minigpt4EvalYaml } from '../fixtures/minigpt4';
import type { TargetName } from './targets';

function f32(n: number, at: (i: number) => number): Uint8Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = at(i);
  return new Uint8Array(a.buffer);
}

const YAML = minigpt4EvalYaml('pretrained_minigpt4_llama2_7b.pth', ['llama_model: Llama-2-7b-chat-hf', 'vit_checkpoint: eva_vit_g.pth']);

/** Writes the seeds of `target` into `dir` (created); returns the files written. */
export function writeSeeds(target: TargetName, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  const file = (name: string) => { const f = path.join(dir, name); out.push(f); return f; };
  switch (target) {
    case 'safetensors':
      writeSafetensorsFile(file('seed-f32.safetensors'), [
        { name: 'a', dtype: 'F32', shape: [2, 3], data: f32(6, (i) => i / 3) },
        { name: 'b', dtype: 'U8', shape: [4], data: Uint8Array.from([0, 1, 2, 3]) },
      ], { format: 'pt' });
      writeSafetensorsFile(file('seed-empty.safetensors'), [{ name: 'e', dtype: 'BF16', shape: [0, 2], data: new Uint8Array(0) }]);
      break;
    case 'masks': {
      const N = 2, L = 2, d = 4;
      saveMasks({
        layers: [0, 1], hiddenSize: d, pairIds: ['p0', 'p1'],
        masks: new Float32Array(N * L * d).map((_, i) => (i % 5) / 4),
        losses: [{ sensitive: 0.5, benign: 0.25, l1: 3 }, { sensitive: 0.4, benign: 0.2, l1: 2 }],
        hookPoint: 'ffn', options: { steps: 15, lr: 0.1 },
      }, file('seed.safetensors'));
      break;
    }
    case 'gate': {
      const counts = Uint32Array.from([0, 1, 2, 2, 1, 0, 2, 1]);
      saveGate(gateFromCounts([0, 3], 4, 0.5, 2, counts, ['p0', 'p1']), file('seed.safetensors'));
      break;
    }
    case 'pairs':
      fs.writeFileSync(file('seed.jsonl'), formatPairs([
        { id: 'passport-1', category: 'passport', subject: 'passport', sensitive: 'What is the number on this passport?',
          benign: 'What color is this passport?', refusal: 'I cannot share that.', benignAnswer: 'It is blue.' },
        { id: 'phone-1', category: 'phone', subject: 'phone', sensitive: 'What is the phone number?', benign: 'Is this a phone?' },
      ], path.join(dir, 'seed.jsonl')));
      break;
    case 'torch-checkpoint':
      torchSave(file('seed.pth'), dict({
        model: ordered({ 'llama_proj.weight': new PyTensor('F32', [2, 3], new Float32Array(6).fill(0.5)), 'llama_proj.bias': new PyTensor('F16', [2], [1, 2]) }),
        epoch: 4, config: dict({ lr: 3e-5, betas: tuple(0.9, 0.999) }),
      }));
      break;
    case 'torch-pickle':
      fs.writeFileSync(file('seed.pkl'), pickleValue(ordered({ w: new PyTensor('F32', [2, 2], [1, 2, 3, 4]), n: 3, s: 'x', l: [1.5, true, null] })).pickle);
      break;
    case 'minigpt4-yaml':
      fs.writeFileSync(file('seed.yaml'), YAML);
      break;
    case 'minigpt4-descriptor':
      fs.writeFileSync(file('seed.json'), JSON.stringify({
        arch: 'minigpt4', model_type: 'pretrain_llama2', llama_model: 'Llama-2-7b-chat-hf', ckpt: 'pretrained_minigpt4_llama2_7b.pth',
        vit_checkpoint: 'eva_vit_g.pth', image_size: 56,
        vision_tower: { patch_size: 14, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 4.3637, tokens_per_embedding: 4 },
      }));
      break;
    case 'model-config':
      fs.writeFileSync(file('seed-llama.json'), JSON.stringify({
        model_type: 'llama', hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
        num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 64, rms_norm_eps: 1e-6, torch_dtype: 'float32',
      }));
      fs.writeFileSync(file('seed-llava.json'), JSON.stringify({
        model_type: 'llava', image_token_index: 32000, vision_feature_layer: -2, vision_feature_select_strategy: 'default',
        projector_hidden_act: 'gelu',
        text_config: { model_type: 'llama', hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 64, max_position_embeddings: 64 },
        vision_config: { model_type: 'clip_vision_model', hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
      }));
      break;
  }
  return out;
}
