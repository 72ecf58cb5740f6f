import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tokenizer, VICUNA_V1_TEMPLATE, type Encoded } from '../lib/model/tokenizer';
import { LLAMA2_LIKE_TEMPLATE, writeLlamaTokenizer } from './fixtures/tokenizer';

let root: string;
let counter = 0;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ngate-tokenizer-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});
function freshDir(): string {
  const dir = path.join(root, `t${counter++}`);
  fs.mkdirSync(dir);
  return dir;
}

async function expectNgateError(p: Promise<unknown> | (() => unknown), code: string, ...fragments: string[]): Promise<Error> {
  let caught: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(Error);
  const err = caught as Error & { code?: string };
  expect(err.code).toBe(code);
  for (const f of fragments) expect(err.message).toContain(f);
  return err;
}

const BYTE_TOKEN = /^<0x([0-9A-F]{2})>$/;

/**
 * Checks that each token's offsets select exactly the text it encodes: word
 * pieces read as the slice (their "▁" standing for a space, except the one
 * the tokenizer prepends to a segment, which maps to no character), and a run
 * of byte-fallback tokens sharing one range decodes (UTF-8) to that slice.
 */
async function expectOffsetsMatchText(tok: Tokenizer, text: string, enc: Encoded): Promise<void> {
  const tokens = enc.ids.map((id) => tok.idToToken(id)!);
  for (let i = 0; i < tokens.length; i++) {
    const [a, b] = enc.offsets[i]!;
    const slice = text.slice(a, b);
    const byte = BYTE_TOKEN.exec(tokens[i]!);
    if (byte) {
      const bytes: number[] = [];
      let j = i;
      while (j < tokens.length && BYTE_TOKEN.test(tokens[j]!) && enc.offsets[j]![0] === a && enc.offsets[j]![1] === b) {
        bytes.push(parseInt(BYTE_TOKEN.exec(tokens[j]!)![1]!, 16));
        j++;
      }
      expect(Buffer.from(bytes).toString('utf8')).toBe(slice);
      i = j - 1;
    } else if (a === b) {
      expect(tokens[i]).toBe('<s>'); // only the post-processor's BOS is zero-width
    } else {
      const piece = tokens[i]!.replace(/\u2581/g, ' ');
      expect([slice, ' ' + slice]).toContain(piece);
    }
  }
}

const QUESTION = 'What is the passport number shown in the image?';
const TEXTS = [
  QUESTION,
  'Où est le café? Zoë 😀 naïve — 東京 🇫🇷!',
  'Tabs\tand  double  spaces,\nnew lines\n\nand digits 0123 survive.',
];

describe.each(['legacy', 'metaspace'] as const)('a LLaMA tokenizer.json in the %s layout', (style) => {
  let tok: Tokenizer;
  let info: ReturnType<typeof writeLlamaTokenizer>;
  beforeAll(async () => {
    const dir = freshDir();
    info = writeLlamaTokenizer(dir, { style });
    tok = await Tokenizer.fromDir(dir);
  });

  test('has the LLaMA id layout: <unk>=0, <s>=1, </s>=2, bytes at 3..258, a small vocabulary', () => {
    expect(tok.vocabSize).toBe(info.vocabSize);
    expect(tok.vocabSize).toBeLessThanOrEqual(1024);
    expect([info.unkId, info.bosId, info.eosId]).toEqual([0, 1, 2]);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([1, 2, null]);
    expect(tok.tokenToId('<0x00>')).toBe(3);
    expect(tok.tokenToId('<0xFF>')).toBe(258);
    expect(tok.idToToken(0)).toBe('<unk>');
    expect(tok.idToToken(tok.vocabSize)).toBeNull();
    expect(tok.tokenToId('no such token')).toBeNull();
  });

  test('encode adds BOS (zero-width) by default and not when asked not to', async () => {
    const withBos = await tok.encode(QUESTION);
    expect(withBos.ids[0]).toBe(1);
    expect(withBos.offsets[0]).toEqual([0, 0]);
    const without = await tok.encode(QUESTION, { addSpecialTokens: false });
    expect(without.ids).toEqual(withBos.ids.slice(1));
    expect(without.offsets).toEqual(withBos.offsets.slice(1));
  });

  test('a privacy question splits into whole "▁"-prefixed word tokens', async () => {
    const enc = await tok.encode(QUESTION, { addSpecialTokens: false });
    expect(enc.ids.map((id) => tok.idToToken(id))).toEqual([
      '▁What', '▁is', '▁the', '▁passport', '▁number', '▁shown', '▁in', '▁the', '▁image', '?',
    ]);
  });

  test.each(TEXTS)('decode(encode(x)) gives back x: %j', async (text) => {
    const enc = await tok.encode(text);
    await expect(tok.decode(enc.ids)).resolves.toBe(text);
    await expect(tok.decode(enc.ids, { skipSpecialTokens: false })).resolves.toMatch(/^<s>/);
  });

  test.each(TEXTS)('offsets are UTF-16 indices that select each token\'s own text: %j', async (text) => {
    await expectOffsetsMatchText(tok, text, await tok.encode(text));
  });

  test('an emoji\'s byte tokens cover both of its UTF-16 code units, and later offsets stay aligned', async () => {
    const text = 'a 😀 passport';
    const enc = await tok.encode(text, { addSpecialTokens: false });
    const tokens = enc.ids.map((id) => tok.idToToken(id));
    const bytes = tokens.flatMap((t, i) => (t !== null && BYTE_TOKEN.test(t) ? [i] : []));
    expect(bytes).toHaveLength(4); // F0 9F 98 80
    for (const i of bytes) expect(enc.offsets[i]).toEqual([2, 4]);
    const last = enc.offsets[enc.offsets.length - 1]!;
    expect(text.slice(last[0], last[1])).toBe(' passport');
  });

  test('special-token strings inside the text become their ids and cover their characters', async () => {
    const text = 'hello</s><s>world';
    const enc = await tok.encode(text, { addSpecialTokens: false });
    const eosAt = enc.ids.indexOf(2);
    const bosAt = enc.ids.indexOf(1);
    expect(enc.offsets[eosAt]).toEqual([5, 9]);
    expect(enc.offsets[bosAt]).toEqual([9, 12]);
    await expectOffsetsMatchText(tok, text, enc);
    expect(await tok.decode(enc.ids)).not.toContain('<s>');
  });

  test('encodeBatch and decodeBatch agree with one-at-a-time calls', async () => {
    const batch = await tok.encodeBatch(TEXTS);
    const single = await Promise.all(TEXTS.map((t) => tok.encode(t)));
    expect(batch).toEqual(single);
    await expect(tok.decodeBatch(batch.map((e) => e.ids))).resolves.toEqual(TEXTS);
  });
});

describe('tokenPositionsOfSpan', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    tok = await Tokenizer.fromDir(dir);
  });

  /** Renders, encodes as transformers does for chat text, and locates `subject` by its characters. */
  async function locate(t: Tokenizer, userText: string, subject: string) {
    const prompt = t.applyChatTemplate([
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: userText },
    ]);
    const start = prompt.indexOf(subject);
    expect(start).toBeGreaterThan(0);
    const enc = await t.encode(prompt, { addSpecialTokens: false });
    const positions = t.tokenPositionsOfSpan(enc.offsets, start, start + subject.length);
    return { prompt, enc, positions };
  }

  test('finds exactly the tokens of "passport number" in a chat-templated query', async () => {
    const { enc, positions } = await locate(tok, QUESTION, 'passport number');
    expect(positions).toHaveLength(2);
    expect(positions[1]).toBe(positions[0]! + 1);
    expect(positions.map((p) => tok.idToToken(enc.ids[p]!))).toEqual(['▁passport', '▁number']);
    const decoded = await tok.decode(positions.map((p) => enc.ids[p]!));
    expect(decoded.trim()).toBe('passport number');
  });

  test('stays exact after non-ASCII text and an emoji earlier in the prompt', async () => {
    const { enc, positions } = await locate(tok, '😀 Où vit Zoë? What is the passport number of Zoë?', 'passport number');
    expect(positions.map((p) => tok.idToToken(enc.ids[p]!))).toEqual(['▁passport', '▁number']);
    const zoe = await locate(tok, '😀 Où vit Zoë?', 'Zoë');
    const decoded = await tok.decode(zoe.positions.map((p) => zoe.enc.ids[p]!));
    expect(decoded.trim()).toBe('Zoë');
  });

  test('works the same with the fallback (Vicuna) template', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir, { chatTemplate: null });
    const vicuna = await Tokenizer.fromDir(dir);
    const { enc, positions } = await locate(vicuna, QUESTION, 'passport number');
    expect(positions.map((p) => vicuna.idToToken(enc.ids[p]!))).toEqual(['▁passport', '▁number']);
  });

  test('ignores zero-width tokens and rejects spans that hit no token', async () => {
    const enc = await tok.encode('passport', { addSpecialTokens: true });
    expect(tok.tokenPositionsOfSpan(enc.offsets, 0, 1)).toEqual([1]); // not the BOS at [0, 0]
    await expectNgateError(() => tok.tokenPositionsOfSpan(enc.offsets, 50, 60), 'ERR_INPUT', 'no token overlaps');
    await expectNgateError(() => tok.tokenPositionsOfSpan(enc.offsets, 3, 3), 'ERR_INPUT', 'start < end');
  });
});

describe('chat templates', () => {
  const MESSAGES = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: 'Who is in the photo?' },
    { role: 'assistant' as const, content: 'A man.' },
    { role: 'user' as const, content: 'What is his name?' },
  ];

  test('the template in tokenizer_config.json is used and rendered with bos/eos tokens', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    const tok = await Tokenizer.fromDir(dir);
    expect(tok.chatTemplate).toBe(LLAMA2_LIKE_TEMPLATE);
    expect(tok.applyChatTemplate(MESSAGES)).toBe(
      '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWho is in the photo? [/INST] A man. </s><s>[INST] What is his name? [/INST]',
    );
  });

  test('a template that rejects the messages (raise_exception) gives ERR_INPUT with its reason', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    const tok = await Tokenizer.fromDir(dir);
    const err = await expectNgateError(
      () => tok.applyChatTemplate([{ role: 'assistant', content: 'hi' }]),
      'ERR_INPUT',
      'roles must alternate',
    );
    expect(err.message).toContain('tokenizer_config.json');
    await expectNgateError(
      () => tok.applyChatTemplate([{ role: 'robot' as 'user', content: 'hi' }]),
      'ERR_INPUT',
      'messages[0].role',
    );
    await expectNgateError(() => tok.applyChatTemplate([]), 'ERR_INPUT', 'non-empty');
  });

  test('without a template in the files, the Vicuna v1.1 (LLaVA-1.5) format is the fallback', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir, { chatTemplate: null });
    const tok = await Tokenizer.fromDir(dir);
    expect(tok.chatTemplate).toBeNull();
    expect(tok.applyChatTemplate([{ role: 'user', content: '<image>\nWhat is shown?' }])).toBe(
      '<s>A chat between a curious human and an artificial intelligence assistant. ' +
        "The assistant gives helpful, detailed, and polite answers to the human's questions. " +
        'USER: <image>\nWhat is shown? ASSISTANT:',
    );
    expect(tok.applyChatTemplate(MESSAGES)).toBe(
      '<s>Be brief. USER: Who is in the photo? ASSISTANT: A man.</s>USER: What is his name? ASSISTANT:',
    );
    expect(tok.applyChatTemplate(MESSAGES.slice(0, 3), { addGenerationPrompt: false })).toBe(
      '<s>Be brief. USER: Who is in the photo? ASSISTANT: A man.</s>',
    );
    expect(VICUNA_V1_TEMPLATE).toContain('USER: ');
  });

  test('chat_template.json takes precedence over tokenizer_config.json', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    const tpl = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}";
    fs.writeFileSync(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: tpl }));
    const tok = await Tokenizer.fromDir(dir);
    expect(tok.chatTemplate).toBe(tpl);
    expect(tok.applyChatTemplate(MESSAGES.slice(1, 2))).toBe('<s>[user] Who is in the photo?\n');
  });

  test('chat_template.jinja takes precedence over both', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    fs.writeFileSync(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: 'json' }));
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ messages | length }}{% if add_generation_prompt %}+{% endif %}');
    const tok = await Tokenizer.fromDir(dir);
    expect(tok.applyChatTemplate(MESSAGES)).toBe('4+');
    expect(tok.applyChatTemplate(MESSAGES, { addGenerationPrompt: false })).toBe('4');
  });

  test('the multi-template list form picks "default"', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir, { chatTemplate: null });
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    cfg.chat_template = [
      { name: 'tool_use', template: 'tools' },
      { name: 'default', template: 'default' },
    ];
    fs.writeFileSync(cfgPath, JSON.stringify(cfg));
    const tok = await Tokenizer.fromDir(dir);
    expect(tok.applyChatTemplate(MESSAGES)).toBe('default');
  });

  test('a template that does not parse is rejected at load, naming its file', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir, { chatTemplate: '{% if %}' });
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', path.join(dir, 'tokenizer_config.json'), 'chat_template', 'does not parse');
  });
});

describe('tokenizer_config.json options', () => {
  function writeWithConfig(patch: Record<string, unknown>): string {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    fs.writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgPath, 'utf8')), ...patch }));
    return dir;
  }

  test('add_bos_token: false and add_eos_token: true change what encode adds, as in transformers', async () => {
    const tok = await Tokenizer.fromDir(writeWithConfig({ add_bos_token: false, add_eos_token: true }));
    const enc = await tok.encode('passport');
    expect(enc.ids.map((id) => tok.idToToken(id))).toEqual(['▁passport', '</s>']);
    expect(enc.offsets[1]).toEqual([0, 0]);
  });

  test('AddedToken-style entries and a pad token are understood', async () => {
    const tok = await Tokenizer.fromDir(
      writeWithConfig({ bos_token: { __type: 'AddedToken', content: '<s>' }, pad_token: '<unk>' }),
    );
    expect(tok.bosTokenId).toBe(1);
    expect(tok.padTokenId).toBe(0);
  });

  test('a special token missing from the vocabulary is an error naming the field', async () => {
    const dir = writeWithConfig({ pad_token: '<pad>' });
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', 'tokenizer_config.json', 'pad_token', '"<pad>"');
  });

  test('malformed tokenizer_config.json names the file', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{"bos_token": ');
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', path.join(dir, 'tokenizer_config.json'), 'not valid JSON');
  });

  test('without tokenizer_config.json, LLaMA defaults apply and the fallback template is used', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    fs.rmSync(path.join(dir, 'tokenizer_config.json'));
    const tok = await Tokenizer.fromDir(dir);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.chatTemplate]).toEqual([1, 2, null, null]);
    expect((await tok.encode('passport')).ids[0]).toBe(1);
  });
});

describe('bad files and bad input', () => {
  test('a missing tokenizer.json is ERR_MISSING_FILE naming the file', async () => {
    const dir = freshDir();
    const err = await expectNgateError(Tokenizer.fromDir(dir), 'ERR_MISSING_FILE', path.join(dir, 'tokenizer.json'));
    expect((err as Error & { file?: string }).file).toBe(path.join(dir, 'tokenizer.json'));
  });

  test('a checkpoint with only tokenizer.model gets a hint on how to convert it', async () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'tokenizer.model'), Buffer.from([0, 1, 2]));
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_MISSING_FILE', 'tokenizer.model', 'save_pretrained');
  });

  test('a truncated tokenizer.json is ERR_TOKENIZER naming the file', async () => {
    const dir = freshDir();
    writeLlamaTokenizer(dir);
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 500));
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', file, 'not valid JSON');
  });

  test('a tokenizer.json without a model, or one the library rejects, is ERR_TOKENIZER naming the file', async () => {
    const dir = freshDir();
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, JSON.stringify({ version: '1.0' }));
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', file, '"model"');
    fs.writeFileSync(file, JSON.stringify({ version: '1.0', model: { type: 'NoSuchModel' } }));
    await expectNgateError(Tokenizer.fromDir(dir), 'ERR_TOKENIZER', file, 'cannot load');
  });

  test('decode rejects ids outside the vocabulary instead of silently dropping them', async () => {
    const dir = freshDir();
    const { vocabSize } = writeLlamaTokenizer(dir);
    const tok = await Tokenizer.fromDir(dir);
    await expectNgateError(tok.decode([1, vocabSize]), 'ERR_INPUT', 'ids[1]');
    await expectNgateError(tok.decode([-1]), 'ERR_INPUT', 'ids[0]');
    await expectNgateError(tok.decodeBatch([[1], [2.5]]), 'ERR_INPUT', 'ids[1][0]');
    await expectNgateError(tok.encode(42 as unknown as string), 'ERR_INPUT', 'text');
  });
});
