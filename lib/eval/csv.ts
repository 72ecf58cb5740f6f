// CSV as MLLMGuard's prompt.csv is written (pandas' to_csv): fields separated
// by commas, a field in double quotes may hold commas, line breaks and
// doubled quotes (""). RFC 4180, plus a UTF-8 byte-order mark and LF or CRLF
// line ends.
import { NgateError } from '../util/errors';

/** The rows of a CSV text, each a list of fields; a blank last line is dropped. */
export function parseCsv(text: string, file: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let quoteLine = 1;  // where the open quoted field began
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const endField = () => { row.push(field); field = ''; };
  const endRow = () => { endField(); rows.push(row); row = []; };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"') {
      if (field !== '') throw new NgateError('ERR_INPUT', `line ${line}: a quote inside an unquoted field`, { file });
      quoted = true;
      quoteLine = line;
    } else if (c === ',') {
      endField();
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      endRow();
      line++;
    } else {
      field += c;
    }
  }
  if (quoted) throw new NgateError('ERR_INPUT', `line ${quoteLine}: a quoted field is not closed`, { file });
  if (field !== '' || row.length > 0) endRow();
  return rows;
}
