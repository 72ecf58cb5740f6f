/**
 * Tokenizer for LLaMA-family checkpoints: the Hugging Face `tokenizers`
 * binding for encoding/decoding and `@huggingface/jinja` for chat templates,
 * loaded from the files a checkpoint directory ships.
 *
 * Offsets: the binding reports offsets in Unicode code points of the input,
 * while JavaScript strings index UTF-16 code units. They differ once the text
 * holds a character outside the BMP (an emoji), so every offset is converted
 * to UTF-16 here; `text.slice(start, end)` then gives the token's characters.
 */
import * as fs from 'fs';
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Tokenizer as HfTokenizer, templateProcessing } from 'tokenizers';
import type { Encoding as HfEncoding } from 'tokenizers';
import { Template } from '@huggingface/jinja';
import { NgateError } from '../util/errors';
import { regularFile } from '../util/files';
import { parseJson } from '../util/json';

export interface Encoded {
  ids: number[];
  /** Per token, the [start, end) range in the encoded text, in UTF-16 code units (JS string indices). Tokens added by the post-processor (BOS) are [0, 0]. */
  offsets: [number, number][];
}

/** A typed part of a message, as processors' chat templates take them (llava-hf's renders image parts as "<image>\n"). */
export type ChatContentPart = { type: 'image' } | { type: 'text'; text: string };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ChatContentPart[];
}

/**
 * Used when a checkpoint ships no chat template: the Vicuna v1.1 conversation
 * format that LLaVA-1.5 was trained on ("llava_v1" in the LLaVA code):
 *   <s>{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:
 * A leading system message replaces the default system prompt. BOS is part of
 * the text, as in the LLaMA-2 chat template, so every template's output is
 * encoded the same way (with `addSpecialTokens: false`).
 */
export const VICUNA_V1_TEMPLATE = [
  '{{- bos_token -}}',
  "{%- if messages[0]['role'] == 'system' -%}",
  "{%- set sys_text = messages[0]['content'] -%}{%- set turns = messages[1:] -%}",
  '{%- else -%}',
  '{%- set sys_text = "A chat between a curious human and an artificial intelligence assistant. ' +
    'The assistant gives helpful, detailed, and polite answers to the human\'s questions." -%}',
  '{%- set turns = messages -%}',
  '{%- endif -%}',
  "{{- sys_text + ' ' -}}",
  '{%- for m in turns -%}',
  "{%- if m['role'] == 'user' -%}",
  "{{- 'USER: ' + m['content'] + ' ' -}}",
  "{%- elif m['role'] == 'assistant' -%}",
  "{{- 'ASSISTANT: ' + m['content'] + eos_token -}}",
  '{%- else -%}',
  "{{- raise_exception('a system message may only come first') -}}",
  '{%- endif -%}',
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}",
].join('\n');

const ROLES = new Set(['system', 'user', 'assistant']);

type Json = Record<string, unknown>;

async function readIfExists(file: string): Promise<string | null> {
  if (!fs.existsSync(file)) return null;
  regularFile(file, 'ERR_TOKENIZER');
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new NgateError('ERR_TOKENIZER', `cannot read file: ${(err as Error).message}`, { file, cause: err });
  }
}

function parseJsonObject(file: string, text: string): Json {
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (err) {
    throw new NgateError('ERR_TOKENIZER', `not valid JSON: ${(err as Error).message}`, { file, cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new NgateError('ERR_TOKENIZER', 'expected a JSON object at the top level', { file });
  }
  return value as Json;
}

/** `chat_template` is a string, or (transformers' multi-template form) a list of {name, template} of which "default" is used. */
function templateFromField(file: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.find(
      (t): t is { name: string; template: string } =>
        typeof t === 'object' && t !== null && t.name === 'default' && typeof t.template === 'string',
    );
    if (named) return named.template;
    throw new NgateError('ERR_TOKENIZER', 'a list of templates must contain {"name": "default", "template": "..."}', {
      file,
      field: 'chat_template',
    });
  }
  throw new NgateError('ERR_TOKENIZER', `expected a string, got ${typeof value}`, { file, field: 'chat_template' });
}

/** Special tokens appear as plain strings or, in older files, as serialized AddedToken objects with a `content`. */
function tokenString(file: string, config: Json, field: string): string | null | undefined {
  const value = config[field];
  if (value === undefined) return undefined;
  if (value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as Json).content === 'string') return (value as Json).content as string;
  throw new NgateError('ERR_TOKENIZER', 'expected a token string or an object with a "content" string', { file, field });
}

function optionalBool(file: string, config: Json, field: string): boolean | undefined {
  const value = config[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new NgateError('ERR_TOKENIZER', `expected true or false, got ${JSON.stringify(value)}`, { file, field });
  return value;
}

function isNonNegativeInt(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0;
}

/**
 * Maps code-point indices to UTF-16 indices for `text`, or returns null when
 * they coincide (no surrogate pairs). A lone surrogate reaches the binding as
 * one U+FFFD, i.e. one code point, so it counts as one here too.
 */
function codePointToUtf16(text: string): number[] | null {
  if (!/[\uD800-\uDFFF]/.test(text)) return null;
  const map: number[] = [];
  for (let i = 0; i < text.length; i++) {
    map.push(i);
    const hi = text.charCodeAt(i);
    const lo = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
    if (hi >= 0xd800 && hi <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) i++; // a pair is one code point
  }
  map.push(text.length);
  return map;
}

function toEncoded(text: string, enc: HfEncoding): Encoded {
  const map = codePointToUtf16(text);
  const offsets = enc.getOffsets().map(([s, e]): [number, number] => (map ? [map[s!]!, map[e!]!] : [s!, e!]));
  return { ids: enc.getIds(), offsets };
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  /** The template text found in the checkpoint's files; null means none was found and VICUNA_V1_TEMPLATE is used. */
  readonly chatTemplate: string | null;

  private readonly template: Template;
  /** Where the template came from, for error messages. */
  private readonly templateFile: string;
  /** Special-token strings handed to the template, as transformers does. */
  private readonly templateTokens: Record<string, string>;

  private constructor(
    private readonly hf: HfTokenizer,
    init: {
      vocabSize: number;
      bos: number | null;
      eos: number | null;
      pad: number | null;
      chatTemplate: string | null;
      template: Template;
      templateFile: string;
      templateTokens: Record<string, string>;
    },
  ) {
    this.vocabSize = init.vocabSize;
    this.bosTokenId = init.bos;
    this.eosTokenId = init.eos;
    this.padTokenId = init.pad;
    this.chatTemplate = init.chatTemplate;
    this.template = init.template;
    this.templateFile = init.templateFile;
    this.templateTokens = init.templateTokens;
  }

  /**
   * Loads `dir/tokenizer.json` (required) and, when present,
   * `dir/tokenizer_config.json`, `dir/chat_template.jinja` and
   * `dir/chat_template.json`. A template in a dedicated file wins over the one
   * in tokenizer_config.json, since newer transformers versions save it there.
   */
  static async fromDir(dir: string): Promise<Tokenizer> {
    if (typeof dir !== 'string' || dir === '') {
      throw new NgateError('ERR_INPUT', 'tokenizer directory must be a non-empty string', { field: 'dir' });
    }
    const tokFile = path.join(dir, 'tokenizer.json');
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    const ctJsonFile = path.join(dir, 'chat_template.json');
    const [tokText, cfgText, jinjaText, ctJsonText] = await Promise.all(
      [tokFile, cfgFile, jinjaFile, ctJsonFile].map(readIfExists),
    );

    if (tokText === null) {
      const hasSpm = await fsp.access(path.join(dir, 'tokenizer.model')).then(() => true, () => false);
      throw new NgateError(
        'ERR_MISSING_FILE',
        'file not found; a Hugging Face fast-tokenizer file is required' +
          (hasSpm ? ' (only the sentencepiece tokenizer.model is present: save it with transformers\' LlamaTokenizerFast.save_pretrained to get one)' : ''),
        { file: tokFile },
      );
    }
    const tokJson = parseJsonObject(tokFile, tokText);
    if (typeof tokJson.model !== 'object' || tokJson.model === null) {
      throw new NgateError('ERR_TOKENIZER', 'missing or not an object; this is not a Hugging Face tokenizer.json', {
        file: tokFile,
        field: 'model',
      });
    }
    let hf: HfTokenizer;
    try {
      hf = HfTokenizer.fromString(tokText);
    } catch (err) {
      throw new NgateError('ERR_TOKENIZER', `the tokenizers library cannot load it: ${(err as Error).message}`, {
        file: tokFile,
        cause: err,
      });
    }

    const cfg = cfgText === null ? {} : parseJsonObject(cfgFile, cfgText);

    // Resolve special tokens: the config names them; without a config, LLaMA's conventional names apply if present.
    const resolve = (field: string, fallback: string | null): { text: string | null; id: number | null } => {
      const named = tokenString(cfgFile, cfg, field);
      const text = named === undefined ? fallback : named;
      if (text === null) return { text: null, id: null };
      const id = hf.tokenToId(text);
      if (id === null || id === undefined) {
        if (named === undefined) return { text: null, id: null };
        throw new NgateError('ERR_TOKENIZER', `token ${JSON.stringify(text)} is not in the vocabulary of tokenizer.json`, {
          file: cfgFile,
          field,
        });
      }
      return { text, id };
    };
    const bos = resolve('bos_token', '<s>');
    const eos = resolve('eos_token', '</s>');
    const pad = resolve('pad_token', null);
    const unk = resolve('unk_token', '<unk>');

    // transformers' Llama tokenizer rebuilds the post-processor from these flags, overriding tokenizer.json; do the same.
    const addBos = optionalBool(cfgFile, cfg, 'add_bos_token');
    const addEos = optionalBool(cfgFile, cfg, 'add_eos_token');
    const cls = cfg.tokenizer_class;
    if ((addBos !== undefined || addEos !== undefined) && (cls === undefined || (typeof cls === 'string' && /llama/i.test(cls)))) {
      const withBos = addBos ?? true;
      const withEos = addEos ?? false;
      if (withBos && bos.id === null) {
        throw new NgateError('ERR_TOKENIZER', 'add_bos_token is true but no BOS token is defined', { file: cfgFile, field: 'bos_token' });
      }
      if (withEos && eos.id === null) {
        throw new NgateError('ERR_TOKENIZER', 'add_eos_token is true but no EOS token is defined', { file: cfgFile, field: 'eos_token' });
      }
      const part = (seq: 'A' | 'B', type: number): string =>
        [withBos ? `${bos.text}:${type}` : '', `$${seq}:${type}`, withEos ? `${eos.text}:${type}` : ''].filter(Boolean).join(' ');
      const specials: [string, number][] = [];
      if (withBos) specials.push([bos.text!, bos.id!]);
      if (withEos && eos.text !== bos.text) specials.push([eos.text!, eos.id!]);
      try {
        hf.setPostProcessor(templateProcessing(part('A', 0), `${part('A', 0)} ${part('B', 1)}`, specials));
      } catch (err) {
        throw new NgateError('ERR_TOKENIZER', `cannot build the BOS/EOS post-processor: ${(err as Error).message}`, {
          file: cfgFile,
          cause: err,
        });
      }
    }

    let chatTemplate: string | null = null;
    let templateFile = '(built-in Vicuna v1.1 template)';
    if (jinjaText !== null) {
      chatTemplate = jinjaText;
      templateFile = jinjaFile;
    } else if (ctJsonText !== null) {
      const ct = templateFromField(ctJsonFile, parseJsonObject(ctJsonFile, ctJsonText).chat_template);
      if (ct === null) throw new NgateError('ERR_TOKENIZER', 'missing', { file: ctJsonFile, field: 'chat_template' });
      chatTemplate = ct;
      templateFile = ctJsonFile;
    } else {
      chatTemplate = templateFromField(cfgFile, cfg.chat_template);
      if (chatTemplate !== null) templateFile = cfgFile;
    }
    let template: Template;
    try {
      template = new Template(chatTemplate ?? VICUNA_V1_TEMPLATE);
    } catch (err) {
      throw new NgateError('ERR_TOKENIZER', `chat template does not parse: ${(err as Error).message}`, {
        file: templateFile,
        field: templateFile === jinjaFile ? undefined : 'chat_template',
        cause: err,
      });
    }

    const templateTokens: Record<string, string> = {};
    if (bos.text !== null) templateTokens.bos_token = bos.text;
    if (eos.text !== null) templateTokens.eos_token = eos.text;
    if (pad.text !== null) templateTokens.pad_token = pad.text;
    if (unk.text !== null) templateTokens.unk_token = unk.text;

    // Embedding tables are indexed by id, so the size is the highest id + 1, which may exceed the token count if ids have gaps.
    let maxId = -1;
    for (const id of Object.values(hf.getVocab(true))) if (id > maxId) maxId = id;
    const vocabSize = Math.max(maxId + 1, hf.getVocabSize(true));

    return new Tokenizer(hf, {
      vocabSize,
      bos: bos.id,
      eos: eos.id,
      pad: pad.id,
      chatTemplate,
      template,
      templateFile,
      templateTokens,
    });
  }

  /**
   * Encodes on the binding's worker threads. With `addSpecialTokens` (default)
   * the tokenizer's post-processor adds BOS for LLaMA; text that already
   * carries its BOS, such as a rendered chat template, should pass false.
   * Special-token strings inside the text (e.g. "<s>") become their ids.
   */
  async encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<Encoded> {
    if (typeof text !== 'string') throw new NgateError('ERR_INPUT', `expected a string, got ${typeof text}`, { field: 'text' });
    const enc = await this.hf.encode(text, null, { addSpecialTokens: opts.addSpecialTokens ?? true });
    return toEncoded(text, enc);
  }

  async encodeBatch(texts: string[], opts: { addSpecialTokens?: boolean } = {}): Promise<Encoded[]> {
    if (!Array.isArray(texts)) throw new NgateError('ERR_INPUT', 'expected an array of strings', { field: 'texts' });
    texts.forEach((t, i) => {
      if (typeof t !== 'string') throw new NgateError('ERR_INPUT', `expected a string, got ${typeof t}`, { field: `texts[${i}]` });
    });
    const encs = await this.hf.encodeBatch(texts, { addSpecialTokens: opts.addSpecialTokens ?? true });
    return encs.map((enc, i) => toEncoded(texts[i]!, enc));
  }

  /** The binding silently drops ids it does not know, so they are rejected here instead. */
  private checkIds(ids: unknown, field: string): number[] {
    if (!Array.isArray(ids)) throw new NgateError('ERR_INPUT', 'expected an array of token ids', { field });
    ids.forEach((id, i) => {
      if (!isNonNegativeInt(id) || id >= this.vocabSize) {
        throw new NgateError('ERR_INPUT', `${JSON.stringify(id)} is not a token id (expected an integer in [0, ${this.vocabSize}))`, {
          field: `${field}[${i}]`,
        });
      }
    });
    return ids as number[];
  }

  async decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    return this.hf.decode(this.checkIds(ids, 'ids'), opts.skipSpecialTokens ?? true);
  }

  async decodeBatch(ids: number[][], opts: { skipSpecialTokens?: boolean } = {}): Promise<string[]> {
    if (!Array.isArray(ids)) throw new NgateError('ERR_INPUT', 'expected an array of id arrays', { field: 'ids' });
    const checked = ids.map((row, i) => this.checkIds(row, `ids[${i}]`));
    return this.hf.decodeBatch(checked, opts.skipSpecialTokens ?? true);
  }

  tokenToId(token: string): number | null {
    if (typeof token !== 'string') return null;
    return this.hf.tokenToId(token) ?? null;
  }

  idToToken(id: number): string | null {
    if (!isNonNegativeInt(id) || id >= this.vocabSize) return null;
    return this.hf.idToToken(id) ?? null;
  }

  /**
   * Renders the conversation with the checkpoint's chat template (or the
   * Vicuna v1.1 fallback), passing `messages`, `add_generation_prompt` and the
   * special-token strings as transformers does. The result usually starts
   * with the BOS string, so encode it with `addSpecialTokens: false`.
   */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new NgateError('ERR_INPUT', 'expected a non-empty array of chat messages', { field: 'messages' });
    }
    const plain = messages.map((m, i) => {
      if (typeof m !== 'object' || m === null) throw new NgateError('ERR_INPUT', 'expected an object', { field: `messages[${i}]` });
      if (!ROLES.has(m.role)) {
        throw new NgateError('ERR_INPUT', `expected "system", "user" or "assistant", got ${JSON.stringify(m.role)}`, {
          field: `messages[${i}].role`,
        });
      }
      const typed = Array.isArray(m.content) && m.content.every((p) => p && (p.type === 'image' || (p.type === 'text' && typeof p.text === 'string')));
      if (typeof m.content !== 'string' && !typed) {
        throw new NgateError('ERR_INPUT', 'expected a string or a list of {type: "image"} / {type: "text", text} parts', { field: `messages[${i}].content` });
      }
      return { role: m.role, content: typeof m.content === 'string' ? m.content : m.content.map((p) => ({ ...p })) };
    });
    try {
      return this.template.render({
        ...this.templateTokens,
        messages: plain,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (err) {
      // The template parsed at load, so a failure here is a reaction to these messages (usually its own
      // raise_exception, e.g. roles that do not alternate); the library gives both kinds as plain Errors.
      throw new NgateError('ERR_INPUT', `the chat template cannot render these messages: ${(err as Error).message}`, {
        file: this.templateFile,
        field: 'messages',
        cause: err,
      });
    }
  }

  /**
   * Indices of the tokens whose [start, end) character range overlaps the
   * span [start, end) of the encoded text. Zero-width tokens (BOS/EOS added by
   * the post-processor) never match.
   */
  tokenPositionsOfSpan(offsets: [number, number][], start: number, end: number): number[] {
    if (!Array.isArray(offsets)) throw new NgateError('ERR_INPUT', 'expected an array of [start, end] pairs', { field: 'offsets' });
    if (!isNonNegativeInt(start) || !isNonNegativeInt(end) || start >= end) {
      throw new NgateError('ERR_INPUT', `span [${start}, ${end}) must be non-negative integers with start < end`, { field: 'span' });
    }
    const hits: number[] = [];
    offsets.forEach((o, i) => {
      const [a, b] = o;
      if (b > a && a < end && start < b) hits.push(i);
    });
    if (hits.length === 0) {
      throw new NgateError('ERR_INPUT', `no token overlaps characters [${start}, ${end})`, { field: 'span' });
    }
    return hits;
  }
}
