// JSON from files we did not write. JSON.parse itself takes any depth, but
// every later walk of the value (validation, JSON.stringify in an error
// message, structuredClone) recurses, and a few kilobytes of "[[[[" overflow
// the stack there with a RangeError far from the file that caused it. The
// depth is checked on the text first, in one pass, so the caller can name the
// file: no configuration, header or pairs line we read nests deeper than a
// handful of levels.

/** The deepest nesting a JSON file we read may have (tokenizer.json, the deepest we know, uses 6). */
export const MAX_JSON_DEPTH = 64;

/** JSON.parse after checking the nesting depth; a SyntaxError names the problem, as JSON.parse's do. */
export function parseJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;                      // backslash: skip the escaped character
      else if (c === 0x22) inString = false;    // closing quote
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {      // [ {
      if (++depth > maxDepth) throw new SyntaxError(`arrays and objects nest more than ${maxDepth} deep (at character ${i})`);
    } else if (c === 0x5d || c === 0x7d) {      // ] }
      depth--;
    }
  }
  return JSON.parse(text);
}
