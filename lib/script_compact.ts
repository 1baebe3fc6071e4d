/**
 * The compact form of the generated bootstrap's parts, for EC2's 16 KB user-data limit: comments,
 * blank lines and indentation removed (Python's four-space levels become one space), by language,
 * from code refresh itself wrote (lib/bootstrap.ts and lib/bootstrap_aws_client.ts hold the
 * commented sources). Content that is data and not code
 * is never touched: bash here-document bodies (the operator's setup script, the systemd unit, the
 * AWS client) and Python triple-quoted strings are kept byte for byte. Comments after code on the
 * same line are kept; so are the first line (`#!` or the Python client's header) and shellcheck
 * directives (`# shellcheck ...`), which apply to the next command.
 *
 * Pure functions of their input: the same text always gives the same bytes. Writes nothing.
 *
 * @module
 */

/**
 * A bash here-document opener in a line of code (not `<<<`, a here-string): `<<WORD`,
 * `<<-WORD`, `<<'WORD'`, `<<"WORD"` or `<<\WORD`. An opener that is really inside a string only
 * makes the lines after it kept as they are, never removed.
 */
const HEREDOC_OPENER = /(?<!<)<<(?!<)(-?)[ \t]*(?:\\|(['"]))?([A-Za-z_][A-Za-z0-9_]*)\2?/g;

/** A shellcheck directive line, which must stay right before its command. */
const SHELLCHECK_DIRECTIVE = /^\s*#\s*shellcheck\s/;

/**
 * A bash script without its full-line comments and blank lines outside here-documents; the
 * first line is kept as it is (the `#!` line). Lines inside a here-document, up to and including
 * its delimiter line, are kept verbatim.
 */
export function compactShell(script: string): string {
  const lines = script.split("\n");
  const out: string[] = [];
  /** Delimiters of the here-documents opened and not yet ended, in order. */
  const pending: { delimiter: string; tabs: boolean }[] = [];
  lines.forEach((line, index) => {
    if (pending.length > 0) {
      out.push(line);
      const { delimiter, tabs } = pending[0];
      if ((tabs ? line.replace(/^\t+/, "") : line) === delimiter) pending.shift();
      return;
    }
    if (index === 0) {
      out.push(line);
      return;
    }
    const trimmed = line.trim();
    if (trimmed === "" || (trimmed.startsWith("#") && !SHELLCHECK_DIRECTIVE.test(line))) return;
    // Indentation means nothing to bash outside here-documents.
    out.push(withoutShellComment(line).trimStart());
    for (const match of line.matchAll(HEREDOC_OPENER)) {
      pending.push({ delimiter: match[3], tabs: match[1] === "-" });
    }
  });
  // The text's final newline (an empty last element) is kept.
  if (lines.at(-1) === "" && out.at(-1) !== "") out.push("");
  return out.join("\n");
}

/**
 * A comment after code goes where nothing before it can make its `#` part of a word or a string:
 * the code has no quote, backquote, `#`, `$` or here-document, and the `#` follows a blank.
 */
const SHELL_TRAILING_COMMENT = /^([^'"`#$<]*[^\s'"`#$<])[ \t]+#(?: .*)?$/;

function withoutShellComment(line: string): string {
  if (SHELLCHECK_DIRECTIVE.test(line)) return line;
  const match = line.match(SHELL_TRAILING_COMMENT);
  return match ? match[1] : line;
}

/**
 * A Python program without its full-line comments and blank lines outside triple-quoted
 * strings; the first line is kept (the program's header). Neither changes what Python runs:
 * a comment or blank line is no token of the program, whatever its indentation.
 */
export function compactPython(source: string): string {
  const lines = source.split("\n");
  const out: string[] = [];
  /** The triple quote of the string the line starts in, if any. */
  let open: string | undefined;
  lines.forEach((line, index) => {
    const startsInString = open !== undefined;
    const scan = scanPythonLine(line, open);
    open = scan.open;
    if (startsInString || index === 0) {
      out.push(line);
      return;
    }
    const code = (scan.comment === undefined ? line : line.slice(0, scan.comment)).trimEnd();
    if (code.trim() === "") return;
    out.push(code.replace(/^((?: {4})+)/, (indent) => " ".repeat(indent.length / 4)));
  });
  if (lines.at(-1) === "" && out.at(-1) !== "") out.push("");
  return out.join("\n");
}

/**
 * The triple quote still open at the end of a Python line, given the one open at its start, and
 * where the line's comment starts, if it has one. Ordinary strings are skipped, so their quotes
 * and `#` count for nothing.
 */
function scanPythonLine(
  line: string,
  open: string | undefined,
): { open: string | undefined; comment?: number } {
  let i = 0;
  while (i < line.length) {
    if (open !== undefined) {
      const end = line.indexOf(open, i);
      if (end < 0) return { open };
      i = end + 3;
      open = undefined;
      continue;
    }
    const c = line[i];
    if (c === "#") return { open: undefined, comment: i };
    if (c === '"' || c === "'") {
      if (line.startsWith(c.repeat(3), i)) {
        open = c.repeat(3);
        i += 3;
        continue;
      }
      // An ordinary string ends on this line: skip it, escapes included.
      i++;
      while (i < line.length && line[i] !== c) i += line[i] === "\\" ? 2 : 1;
      i++;
      continue;
    }
    i++;
  }
  return { open };
}
