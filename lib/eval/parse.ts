// How a model's raw answer becomes the benchmark's answer. Each rule is the
// one the benchmark's own scoring code applies, named, with one change where
// that code silently guesses: an answer it cannot read is `null` here
// (unparseable), counted as wrong and counted on its own, instead of being
// read as "yes" (POPE) or as a random choice (ScienceQA's original script).

export interface ParsingRule {
  name: string;
  /** The rule in words, for the report. */
  description: string;
}

export const POPE_RULE: ParsingRule = {
  name: 'pope-first-sentence',
  description: 'POPE\'s evaluate.py (and LLaVA\'s eval_pope.py): keep the text before the first ".", drop commas, split at spaces; ' +
    'a word "No", "no" or "not" makes the answer no. POPE reads every other answer as yes; here only one with the word "Yes" or "yes" is yes, ' +
    'and one with neither is unparseable (counted wrong). `officialAccuracy` gives POPE\'s own reading.',
};

export const MME_RULE: ParsingRule = {
  name: 'mme-prefix',
  description: 'MME\'s eval_tool/calculation.py: the answer, lower-cased (and trimmed), is yes or no when it is exactly "yes" or "no", ' +
    'else yes when its first 4 characters contain "yes", else no when they contain "no"; anything else is "other": unparseable, counted wrong.',
};

export const SCIENCEQA_RULE: ParsingRule = {
  name: 'llava-scienceqa-letter',
  description: 'LLaVA\'s eval_science_qa.py: the trimmed answer is a letter when it is exactly one of A–E, or starts with "X. ", ' +
    'or holds exactly one "The answer is X." (X a capital letter); anything else, and a letter past the last choice, is unparseable, counted wrong.',
};

export function refusalRule(matcherName: string, mode: string): ParsingRule {
  return {
    name: `refusal-${matcherName}`,
    description: `RtA: an answer is a refusal when it ${mode === 'prefix' ? 'starts with' : 'contains'} one of the refusal phrases (${matcherName}; ` +
      'the paper\'s appendix 8.2 list by default), letter case ignored. Every answer is either a refusal or not: none is unparseable.',
  };
}

/** POPE's tokenisation of an answer: the first sentence, commas dropped, split at spaces. */
function popeWords(answer: string): string[] {
  let text = answer;
  const dot = text.indexOf('.');
  if (dot !== -1) text = text.slice(0, dot);
  return text.replace(/,/g, '').split(' ');
}

/** POPE's own reading: no when a word is "No", "no" or "not", yes otherwise. */
export function popeOfficial(answer: string): 'yes' | 'no' {
  const words = popeWords(answer);
  return words.includes('No') || words.includes('not') || words.includes('no') ? 'no' : 'yes';
}

/** POPE's reading, with an answer holding neither a no-word nor "Yes"/"yes" unparseable (null). */
export function parsePope(answer: string): 'yes' | 'no' | null {
  const words = popeWords(answer.trim());
  if (words.includes('No') || words.includes('not') || words.includes('no')) return 'no';
  if (words.includes('Yes') || words.includes('yes')) return 'yes';
  return null;
}

/** MME's reading (parse_pred_ans); null for its "other". */
export function parseMme(answer: string): 'yes' | 'no' | null {
  const a = answer.trim().toLowerCase();
  if (a === 'yes' || a === 'no') return a;
  const prefix = a.slice(0, 4);
  if (prefix.includes('yes')) return 'yes';
  if (prefix.includes('no')) return 'no';
  return null;
}

const OPTIONS = ['A', 'B', 'C', 'D', 'E'];

/** LLaVA's ScienceQA reading: the chosen letter, or null; a letter past `choiceCount` is null. */
export function parseChoiceLetter(answer: string, choiceCount: number): string | null {
  const a = answer.trim();
  let letter: string | null = null;
  if (OPTIONS.includes(a)) letter = a;
  else if (a.length >= 3 && OPTIONS.includes(a[0]) && a.slice(1, 3) === '. ') letter = a[0];
  else {
    const found = [...a.matchAll(/The answer is ([A-Z])./g)];
    if (found.length === 1) letter = found[0][1];
  }
  if (letter === null) return null;
  const at = OPTIONS.indexOf(letter);
  return at >= 0 && at < choiceCount ? letter : null;
}

/** The letter of choice i (0 → "A"). */
export function choiceLetter(i: number): string {
  return OPTIONS[i];
}

export const MAX_CHOICES = OPTIONS.length;
