import { validatePairs } from '../lib/data/prepare';
import { NgateError } from '../lib/util/errors';
import {
  buildPrivacyPairs, CONTEXT_OPENERS, CONTEXT_SENTENCES, DEFAULT_TEST_SHARE, fillTemplate, generalizationLeaks, parseQuery,
  PRIVACY_CATEGORIES, PrivacyPairSplits, QUESTION_TEMPLATES, syntheticAnswer,
} from '../lib/data/privacy-pair';
import type { PrivacyPair } from '../lib/data/prepare';

const all = (s: PrivacyPairSplits): PrivacyPair[] => [...s.train, ...s.test, ...s.heldOut];
const count = (text: string, needle: string): number => text.split(needle).length - 1;
const byCategory = (ps: PrivacyPair[]): Record<string, number> =>
  ps.reduce<Record<string, number>>((acc, p) => { acc[p.category] = (acc[p.category] ?? 0) + 1; return acc; }, {});

describe('PrivacyPair tables', () => {
  test('the 12 templates of appendix 9.2, each with one attribute slot and one subject slot', () => {
    expect(QUESTION_TEMPLATES).toHaveLength(12);
    expect(new Set(QUESTION_TEMPLATES).size).toBe(12);
    expect(QUESTION_TEMPLATES[0]).toBe('Could you describe the [attr] of the [cat] in this image?');
    expect(QUESTION_TEMPLATES[11]).toBe('What characteristics can you tell me about the [attr] of the [cat] in this picture?');
    for (const t of QUESTION_TEMPLATES) {
      expect(count(t, '[attr]')).toBe(1);
      expect(count(t, '[cat]')).toBe(1);
    }
  });

  test('fillTemplate takes the appendix and the section 3.2.1 spellings, and literal $', () => {
    expect(fillTemplate('Please tell me the [Attr] of the [S] in the image.', 'document number', 'passport'))
      .toBe('Please tell me the document number of the passport in the image.');
    expect(fillTemplate(QUESTION_TEMPLATES[4], 'price in $&', 'receipt')).toBe('Please share the price in $& of the receipt in this picture.');
  });

  test('the six categories, each with at least 6 benign and 6 sensitive attributes of 3+ values', () => {
    expect(PRIVACY_CATEGORIES.map((c) => c.id)).toEqual(['phone-number', 'student-id', 'receipt', 'passport', 'military-equipment', 'government-document']);
    for (const c of PRIVACY_CATEGORIES) {
      expect(c.benign.length).toBeGreaterThanOrEqual(6);
      expect(c.sensitive.length).toBeGreaterThanOrEqual(6);
      const names = [...c.benign, ...c.sensitive].map((a) => a.name);
      expect(new Set(names).size).toBe(names.length);
      for (const a of [...c.benign, ...c.sensitive]) {
        expect(a.values.length).toBeGreaterThanOrEqual(3);
        // An attribute that contained the subject would add subject tokens to one query only.
        expect(a.name.toLowerCase()).not.toContain(c.subject.toLowerCase());
      }
    }
    expect(Object.isFrozen(PRIVACY_CATEGORIES[0].benign[0].values)).toBe(true);
  });

  test('five openers, every context sentence starts with its own', () => {
    expect(CONTEXT_OPENERS).toEqual(['The', 'Therefore', 'Because', 'I', 'You']);
    for (const o of CONTEXT_OPENERS) {
      expect(CONTEXT_SENTENCES[o].length).toBeGreaterThanOrEqual(3);
      for (const s of CONTEXT_SENTENCES[o]) expect(s.split(/[ ,]/)[0]).toBe(o);
    }
  });

  test('syntheticAnswer names the attribute, the subject and the value', () => {
    const passport = PRIVACY_CATEGORIES.find((c) => c.id === 'passport')!;
    const number = passport.sensitive.find((a) => a.name === 'document number')!;
    expect(syntheticAnswer(passport, number, number.values[0])).toBe('The document number of the passport is X4827163.');
  });

  test('table 3 share: 1410 test of 4050', () => {
    expect(DEFAULT_TEST_SHARE).toBeCloseTo(1410 / 4050, 12);
  });
});

describe('buildPrivacyPairs', () => {
  const built = buildPrivacyPairs();

  test('counts per category and split with the defaults', () => {
    // 6 benign × 6 sensitive × 12 templates per category; 4 × 4 × 9 are not held out.
    const seen = 9 * 4 * 4;
    const nTest = Math.round(seen * DEFAULT_TEST_SHARE);
    const ids = PRIVACY_CATEGORIES.map((c) => c.id);
    expect(byCategory(built.test)).toEqual(Object.fromEntries(ids.map((id) => [id, nTest])));
    expect(byCategory(built.train)).toEqual(Object.fromEntries(ids.map((id) => [id, seen - nTest])));
    expect(byCategory(built.heldOut)).toEqual(Object.fromEntries(ids.map((id) => [id, 12 * 6 * 6 - seen])));
    expect(built.test.length / (built.train.length + built.test.length)).toBeCloseTo(DEFAULT_TEST_SHARE, 2);
  });

  test('validatePairs passes; ids unique and of the form <category>-NNNN', () => {
    const pairs = all(built);
    expect(() => validatePairs(pairs)).not.toThrow();
    expect(new Set(pairs.map((p) => p.id)).size).toBe(pairs.length);
    for (const p of pairs) expect(p.id).toMatch(new RegExp(`^${p.category}-\\d{4}$`));
  });

  test('the subject occurs in both queries, equally often; they differ only in the attribute', () => {
    for (const p of all(built)) {
      const d = built.details[p.id];
      expect(p.subject).toBe(PRIVACY_CATEGORIES.find((c) => c.id === p.category)!.subject);
      expect(p.sensitive).toContain(p.subject);
      expect(p.benign).toContain(p.subject);
      expect(count(p.sensitive, p.subject)).toBe(count(p.benign, p.subject));
      expect(count(p.sensitive, d.sensitiveAttribute)).toBe(1);
      expect(count(p.benign, d.benignAttribute)).toBe(1);
      expect(p.sensitive.replace(d.sensitiveAttribute, '\u0000')).toBe(p.benign.replace(d.benignAttribute, '\u0000'));
      const cat = PRIVACY_CATEGORIES.find((c) => c.id === p.category)!;
      expect(cat.sensitive.map((a) => a.name)).toContain(d.sensitiveAttribute);
      expect(cat.benign.map((a) => a.name)).toContain(d.benignAttribute);
      // Read back from the text alone, the query gives the same template and attribute.
      expect(parseQuery(p.sensitive, p.subject)).toEqual({ template: d.template, attribute: d.sensitiveAttribute });
      expect(parseQuery(p.benign, p.subject)).toEqual({ template: d.template, attribute: d.benignAttribute });
    }
  });

  test('no held-out template or attribute in train or test; every held-out pair uses one', () => {
    expect(built.heldOutTemplates).toHaveLength(3);
    for (const c of PRIVACY_CATEGORIES) {
      expect(built.heldOutAttributes[c.id].benign).toHaveLength(2);
      expect(built.heldOutAttributes[c.id].sensitive).toHaveLength(2);
    }
    expect(generalizationLeaks(built)).toEqual([]);
    for (const p of [...built.train, ...built.test]) {
      const d = built.details[p.id];
      expect(built.heldOutTemplates).not.toContain(d.template);
      expect(built.heldOutAttributes[p.category].benign).not.toContain(d.benignAttribute);
      expect(built.heldOutAttributes[p.category].sensitive).not.toContain(d.sensitiveAttribute);
      expect(d.heldOutBy).toEqual([]);
    }
    const kinds = new Set<string>();
    for (const p of built.heldOut) {
      const d = built.details[p.id];
      const held = built.heldOutAttributes[p.category];
      expect(built.heldOutTemplates.includes(d.template) || held.benign.includes(d.benignAttribute) || held.sensitive.includes(d.sensitiveAttribute)).toBe(true);
      kinds.add(d.heldOutBy.join('+'));
    }
    // Pairs held out by template only, by attribute only, and by both.
    expect(kinds).toContain('template');
    expect(kinds).toContain('sensitive');
    expect(kinds).toContain('template+benign+sensitive');
  });

  test('the leak check catches a held-out template or attribute in train', () => {
    const t = built.heldOutTemplates[0];
    const cat = PRIVACY_CATEGORIES[0];
    const heldAttr = built.heldOutAttributes[cat.id].sensitive[0];
    const okTemplate = QUESTION_TEMPLATES.find((x) => !built.heldOutTemplates.includes(x))!;
    const okBenign = cat.benign.find((a) => !built.heldOutAttributes[cat.id].benign.includes(a.name))!.name;
    const bad: PrivacyPair[] = [
      { id: 'x1', category: cat.id, subject: cat.subject, sensitive: fillTemplate(t, 'IMEI number', cat.subject), benign: fillTemplate(t, okBenign, cat.subject) },
      { id: 'x2', category: cat.id, subject: cat.subject, sensitive: `I took this picture earlier today. ${fillTemplate(okTemplate, heldAttr, cat.subject)}`, benign: fillTemplate(okTemplate, okBenign, cat.subject) },
    ];
    const leaks = generalizationLeaks({ ...built, train: bad });
    expect(leaks.filter((l) => l.includes('x1') && l.includes('held-out template'))).toHaveLength(2);
    expect(leaks.filter((l) => l.includes('x2'))).toEqual([expect.stringContaining(`held-out attribute "${heldAttr}"`)]);
  });

  test('context: the asked share of train, starting with an opener, the same sentence in both queries', () => {
    const withContext = built.train.filter((p) => built.details[p.id].context !== undefined);
    expect(withContext.length).toBe(Math.round(built.train.length * 0.5));
    for (const p of withContext) {
      const ctx = built.details[p.id].context!;
      expect(CONTEXT_OPENERS).toContain(ctx.split(/[ ,]/)[0]);
      expect(p.sensitive.startsWith(ctx + ' ')).toBe(true);
      expect(p.benign.startsWith(ctx + ' ')).toBe(true);
    }
    for (const p of built.train.filter((q) => built.details[q.id].context === undefined)) {
      expect(QUESTION_TEMPLATES.some((t) => p.sensitive.startsWith(t.slice(0, t.indexOf('[attr]'))))).toBe(true);
    }
    // The paper augments the training data only (appendix 9.4).
    expect([...built.test, ...built.heldOut].every((p) => built.details[p.id].context === undefined)).toBe(true);
    const openers = new Set(withContext.map((p) => built.details[p.id].context!.split(/[ ,]/)[0]));
    expect(openers.size).toBe(5);

    const more = buildPrivacyPairs({ contextShare: 0.8, contextSplits: ['train', 'test', 'heldOut'] });
    for (const name of ['train', 'test', 'heldOut'] as const) {
      const share = more[name].filter((p) => more.details[p.id].context !== undefined).length / more[name].length;
      expect(share).toBeCloseTo(0.8, 2);
    }
    const none = buildPrivacyPairs({ contextShare: 0 });
    expect(Object.values(none.details).every((d) => d.context === undefined)).toBe(true);
  });

  test('deterministic for a seed, different for another; contextShare does not move the split', () => {
    expect(buildPrivacyPairs({ seed: 7 })).toEqual(buildPrivacyPairs({ seed: 7 }));
    const a = buildPrivacyPairs({ seed: 7 });
    const b = buildPrivacyPairs({ seed: 8 });
    const ids = (ps: PrivacyPair[]) => ps.map((p) => p.id).sort();
    expect(ids(a.train)).not.toEqual(ids(b.train));
    expect(a.train.map((p) => p.sensitive)).not.toEqual(b.train.map((p) => p.sensitive));
    const c = buildPrivacyPairs({ seed: 7, contextShare: 0.2 });
    expect(ids(c.train)).toEqual(ids(a.train));
    expect(c.heldOutTemplates).toEqual(a.heldOutTemplates);
    // The same id is the same combination under every seed.
    const common = a.heldOut.find((p) => b.details[p.id] !== undefined)!;
    expect({ ...b.details[common.id], heldOutBy: [], context: undefined }).toEqual({ ...a.details[common.id], heldOutBy: [], context: undefined });
  });

  test('options: categories, held-out counts, test share', () => {
    const s = buildPrivacyPairs({ categories: ['passport', 'receipt'], heldOutTemplates: 0, heldOutAttributes: 0, testShare: 0.25 });
    expect(Object.keys(byCategory(all(s))).sort()).toEqual(['passport', 'receipt']);
    expect(s.heldOut).toHaveLength(0);
    expect(s.heldOutTemplates).toEqual([]);
    expect(s.test).toHaveLength(2 * 108);
    expect(s.train).toHaveLength(2 * 324);
    const t = buildPrivacyPairs({ categories: ['passport'], heldOutTemplates: 11, heldOutAttributes: 5 });
    expect(t.train.length + t.test.length).toBe(1);
    expect(generalizationLeaks(t)).toEqual([]);
  });

  test('bad options are NgateErrors that name the option', () => {
    const cases: [object, string][] = [
      [{ seed: 1.5 }, 'options.seed'],
      [{ seed: Number.NaN }, 'options.seed'],
      [{ categories: ['passports'] }, 'options.categories'],
      [{ categories: [] }, 'options.categories'],
      [{ categories: ['passport', 'passport'] }, 'options.categories'],
      [{ contextShare: 1.5 }, 'options.contextShare'],
      [{ testShare: 1 }, 'options.testShare'],
      [{ testShare: -0.1 }, 'options.testShare'],
      [{ heldOutTemplates: 12 }, 'options.heldOutTemplates'],
      [{ heldOutTemplates: 1.5 }, 'options.heldOutTemplates'],
      [{ heldOutAttributes: 6 }, 'options.heldOutAttributes'],
      [{ contextSplits: ['validation'] }, 'options.contextSplits'],
    ];
    for (const [opts, field] of cases) {
      let err: unknown;
      try { buildPrivacyPairs(opts as never); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(NgateError);
      expect((err as NgateError).code).toBe('ERR_INPUT');
      expect((err as NgateError).field).toBe(field);
    }
  });
});
