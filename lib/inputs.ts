/**
 * The machinery every task's inputs share: how an input is declared ({@link InputSpec}), how raw
 * values are read and checked ({@link Reader}), and the error that lists every problem at once
 * ({@link ConfigError}).
 *
 * A task declares its own inputs and parses its own section of the desired state with these, in
 * its module; `config.ts` collects the raw values from flags, environment and file, and composes
 * the sections. Nothing here reads a file or the environment.
 *
 * @module
 */

/** Thrown when the desired state is invalid; the entry exits 2 on it. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid desired state:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

export type Kind = "string" | "int" | "list" | "json" | "bool";

/** One input: its flag (also its config-file key), environment variable, kind and default. */
export interface InputSpec {
  name: string;
  env?: string[];
  kind: Kind;
  default?: string;
  help: string;
  /** Read from the environment only (never a flag or a config file), and never printed. */
  secret?: boolean;
  /**
   * Its environment variables are set by the platform whether or not the user meant them for
   * refresh (GitHub Actions sets GITHUB_REPOSITORY and GITHUB_API_URL in every job, the AWS
   * credentials action AWS_REGION), so a `--config` file wins over them.
   */
  ambient?: boolean;
}

/**
 * What a task cannot run without: input names, or `a|b` when either will do. A task exports its
 * own list; it is checked only when the task is selected with `--only`.
 */
export type Requirements = string[];

/** Raw values by input name, as flags, environment and file gave them (later sources won). */
export type Raw = Record<string, unknown>;

/**
 * Reads raw values as their kinds. Each reader method records a problem and returns undefined
 * (false for {@link bool}) for a value of the wrong shape; `int` and `list` fall back to the
 * input's default.
 */
export class Reader {
  constructor(
    readonly raw: Raw,
    readonly problems: string[],
    /** The specs whose defaults `int` and `list` fall back to. */
    readonly inputs: readonly InputSpec[],
  ) {}

  has(name: string): boolean {
    return this.raw[name] !== undefined;
  }

  string(name: string): string | undefined {
    const value = this.raw[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value.trim() === "") {
      this.problems.push(`${name}: expected a non-empty string, got ${show(value)}`);
      return undefined;
    }
    return value.trim();
  }

  int(name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const value = this.raw[name] ?? this.defaultOf(name);
    if (value === undefined) return undefined;
    const n = typeof value === "number"
      ? value
      : /^\s*-?\d+\s*$/.test(String(value))
      ? Number(value)
      : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}-${max}`;
      this.problems.push(`${name}: expected a whole number ${range}, got ${show(value)}`);
      return undefined;
    }
    return n;
  }

  bool(name: string): boolean {
    const value = this.raw[name];
    if (value === undefined || value === true || value === false) return value === true;
    const text = String(value).toLowerCase();
    if (["true", "1", "yes"].includes(text)) return true;
    if (["false", "0", "no", ""].includes(text)) return false;
    this.problems.push(`${name}: expected true or false, got ${show(value)}`);
    return false;
  }

  list(name: string): string[] | undefined {
    const value = this.raw[name] ?? this.defaultOf(name);
    if (value === undefined) return undefined;
    if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      return value.map((v) => v.trim()).filter(Boolean);
    }
    if (typeof value === "string") return value.split(/[\s,]+/).filter(Boolean);
    this.problems.push(`${name}: expected a list of strings, got ${show(value)}`);
    return undefined;
  }

  json(name: string): unknown {
    const value = this.raw[name];
    if (typeof value !== "string") return value;
    try {
      return parseJson(value);
    } catch (error) {
      this.problems.push(`${name}: malformed JSON (${(error as Error).message})`);
      return undefined;
    }
  }

  private defaultOf(name: string): string | undefined {
    return this.inputs.find((i) => i.name === name)?.default;
  }
}

/** A value as a problem quotes it: JSON, cut to 80 characters. */
export function show(value: unknown): string {
  const text = value instanceof TooLargeNumber
    ? value.describe()
    : JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * A JSON number no JavaScript number holds exactly (`1e400` is Infinity, `12345678901234567890`
 * is rounded), kept as its text so a problem quotes what was written rather than `null`.
 */
export class TooLargeNumber {
  constructor(readonly source: string) {}
  describe(): string {
    return `${this.source} (a number too large)`;
  }
  toJSON(): string {
    return this.describe();
  }
}

type Reviver = (key: string, value: unknown, context?: { source?: string }) => unknown;

/**
 * JSON.parse, but a number that cannot be held exactly becomes a {@link TooLargeNumber} (V8's
 * `JSON.parse` passes the reviver each primitive's source text).
 */
export function parseJson(text: string): unknown {
  const reviver: Reviver = (_key, value, context) =>
    typeof value === "number" && context?.source !== undefined &&
      (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value)))
      ? new TooLargeNumber(context.source)
      : value;
  return JSON.parse(text, reviver as Parameters<typeof JSON.parse>[1]);
}

/**
 * Reads a file input as text, reading at most `maxBytes + 1` bytes: a file larger than that (or
 * an endless one such as /dev/zero) throws {@link FileTooLarge} at once instead of being read
 * whole. The entry passes one over real files ({@link readBounded}); tests pass their own.
 */
export type ReadTextFile = (path: string, maxBytes: number) => string;

/** The most refresh reads of a file input (config file, user data) unless the input says less. */
export const FILE_INPUT_MAX_BYTES = 1024 * 1024;

export class FileTooLarge extends Error {
  constructor(readonly maxBytes: number) {
    super(`larger than ${maxBytes} bytes, the most refresh reads of it`);
    this.name = "FileTooLarge";
  }
}

/** What {@link readBounded} reads from (`Deno.FsFile` is one). */
export interface SyncReadable {
  readSync(buffer: Uint8Array): number | null;
  close(): void;
}

/** Reads a whole file as UTF-8 text, at most `maxBytes + 1` bytes of it; closes the file. */
export function readBounded(file: SyncReadable, maxBytes: number): string {
  try {
    const buffer = new Uint8Array(maxBytes + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = file.readSync(buffer.subarray(length));
      if (n === null || n === 0) break;
      length += n;
    }
    if (length > maxBytes) throw new FileTooLarge(maxBytes);
    return new TextDecoder().decode(buffer.subarray(0, length));
  } finally {
    file.close();
  }
}

/**
 * Checks items of a list against a pattern, reporting each bad one.
 * Returns the list when every item matched.
 */
export function checkIds(
  name: string,
  ids: string[] | undefined,
  pattern: RegExp,
  expected: string,
  problems: string[],
): string[] | undefined {
  if (ids === undefined) return undefined;
  const bad = ids.filter((id) => !pattern.test(id));
  for (const id of bad) problems.push(`${name}: "${id}" is not ${expected}`);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  for (const id of new Set(dupes)) problems.push(`${name}: "${id}" is listed twice`);
  return bad.length || dupes.length ? undefined : ids;
}

/** Id patterns more than one task checks. */
export const SUBNET = /^subnet-[0-9a-f]{8,17}$/;
export const SECURITY_GROUP = /^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;

/**
 * Paths (`a.b`) of keys given more than once in one object of a JSON text that JSON.parse
 * accepted, which it silently resolved to the last one.
 */
export function duplicateKeys(text: string): string[] {
  const found = new Set<string>();
  const stack: { keys?: Set<string>; path: string; key: string }[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = stack.at(-1);
      if (expectKey && top?.keys) {
        const key: string = JSON.parse(text.slice(i, end + 1));
        top.key = top.path ? `${top.path}.${key}` : key;
        if (top.keys.has(key)) found.add(top.key);
        top.keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      const parent = stack.at(-1);
      const path = parent ? (parent.keys ? parent.key : parent.path) : "";
      stack.push({ keys: c === "{" ? new Set() : undefined, path, key: "" });
      expectKey = c === "{";
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      expectKey = stack.at(-1)?.keys !== undefined;
    }
  }
  return [...found];
}

/** The names every task may derive its own from, read from the shared inputs (lib/config.ts). */
export interface Names {
  region: string;
  repo?: { owner: string; name: string };
  org?: string;
  table: string;
  /** The stem of every default resource name: `owner-repo`, or the organization. */
  stem: string;
}
