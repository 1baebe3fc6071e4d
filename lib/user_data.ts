/**
 * The launch template's user data: the bootstrap refresh generates (lib/bootstrap.ts), or the
 * operator's own script (`--user-data`, the expert mode), fitted into EC2's limit.
 *
 * EC2 limits user data to 16 KB in raw form, before base64 ("User data is limited to 16 KB, in raw
 * form, before it is base64-encoded", EC2 User Guide, "Work with instance user data"). A script
 * over that is sent gzip-compressed instead: cloud-init uncompresses gzip content and then treats
 * it as if it were not compressed (cloud-init docs, "User-Data Formats: Gzip Compressed Content"),
 * so a `#!` script still runs as one. The compressed form is deterministic (fixed header without
 * name or time, fixed level), so equal inputs always make equal user data and an unchanged desired
 * state writes nothing.
 *
 * Writes nothing; the launch-template task puts what this returns into the template.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { crc32, deflateRawSync, gunzipSync } from "node:zlib";
import { bootstrapScript, type BootstrapSpec } from "./bootstrap.ts";
import { sha256 } from "./contract.ts";

/**
 * A released runner version (2.334.0, April 2026) of the length versions have: the stand-in for
 * `--runner-version latest` (the default) when the user data's size is checked before the newest
 * release is known. The version installed is resolved on each run (lib/runner_release.ts).
 */
export const PLACEHOLDER_RUNNER_VERSION = "2.334.0";

/**
 * @deprecated The default is now `--runner-version latest`; this is
 * {@link PLACEHOLDER_RUNNER_VERSION}, kept for the tests that serve it as a release.
 */
export const DEFAULT_RUNNER_VERSION = PLACEHOLDER_RUNNER_VERSION;

/** EC2's limit on user data, in bytes before base64. */
export const USER_DATA_MAX_BYTES = 16 * 1024;

/** The checksums of both runner packages (lowercase hex SHA-256). */
export interface RunnerChecksums {
  x64: string;
  arm64: string;
}

/**
 * What the generated bootstrap is made from: {@link BootstrapSpec} with the runner checksums
 * optional and the version possibly `latest`, since refresh may have to look them up in the
 * runner's releases first.
 */
export type BootstrapInputs = Omit<BootstrapSpec, "runner"> & {
  runner: Omit<BootstrapSpec["runner"], "sha256"> & { sha256?: RunnerChecksums };
};

/** Where the instances' user data comes from. */
export type UserDataSource =
  | { kind: "file"; path: string; script: string }
  | { kind: "bootstrap"; inputs: BootstrapInputs };

/** The user data EC2 gets: the script, as is or gzip-compressed, and both sizes. */
export interface EncodedUserData {
  bytes: Uint8Array;
  compressed: boolean;
  /** Size of the script itself, in bytes. */
  plainBytes: number;
}

/**
 * Stand-ins for checksums not known yet at config time: hex digests like the real ones, so a
 * script made with them has the real one's length and compresses about as well.
 */
const PLACEHOLDER_CHECKSUMS: RunnerChecksums = {
  x64: sha256("refresh: x64 checksum placeholder"),
  arm64: sha256("refresh: arm64 checksum placeholder"),
};

/**
 * The generated bootstrap for given checksums and version (or the given inputs' own): the
 * version must be a resolved one, not `latest`.
 */
export function generatedScript(
  inputs: BootstrapInputs,
  checksums?: RunnerChecksums,
  version?: string,
): string {
  const sha256 = checksums ?? inputs.runner.sha256;
  if (!sha256) throw new Error("generatedScript: no runner checksums given or resolved");
  return bootstrapScript({
    ...inputs,
    runner: { ...inputs.runner, version: version ?? inputs.runner.version, sha256 },
  });
}

/**
 * The inputs as they will be once the runner is resolved, for checking before any call: the
 * version and checksums given, else same-sized stand-ins.
 */
export function plannedInputs(inputs: BootstrapInputs): BootstrapInputs {
  const { runner } = inputs;
  return {
    ...inputs,
    runner: {
      ...runner,
      version: runner.version === "latest" ? PLACEHOLDER_RUNNER_VERSION : runner.version,
      sha256: runner.sha256 ?? PLACEHOLDER_CHECKSUMS,
    },
  };
}

/**
 * The script as it will be once the runner is resolved, for checking its size before any call:
 * the real script when version and checksums were given, else one with same-sized stand-ins.
 */
export function plannedScript(source: UserDataSource): string {
  if (source.kind === "file") return source.script;
  return generatedScript(plannedInputs(source.inputs));
}

/**
 * The user data for a script: the script itself when it fits EC2's limit, else its gzip form
 * when that fits, else the sizes of both (the caller says what to do).
 */
export function encodeUserData(
  script: string,
): EncodedUserData | { tooLarge: { plainBytes: number; gzipBytes: number } } {
  const plain = new TextEncoder().encode(script);
  if (plain.length <= USER_DATA_MAX_BYTES) {
    return { bytes: plain, compressed: false, plainBytes: plain.length };
  }
  const packed = gzip(plain);
  if (packed.length <= USER_DATA_MAX_BYTES) {
    return { bytes: packed, compressed: true, plainBytes: plain.length };
  }
  return { tooLarge: { plainBytes: plain.length, gzipBytes: packed.length } };
}

/**
 * Checks a source's user data fits EC2's limit (compressed if need be); returns the problem to
 * report, naming both sizes, or undefined.
 */
export function userDataSizeProblem(source: UserDataSource): string | undefined {
  const encoded = encodeUserData(plannedScript(source));
  if (!("tooLarge" in encoded)) return undefined;
  const { plainBytes, gzipBytes } = encoded.tooLarge;
  const what = source.kind === "file"
    ? `user-data: ${source.path}`
    : `pre-runner-script: the generated bootstrap${
      source.inputs.preRunnerScript !== undefined ? " with the pre-runner script" : ""
    }`;
  return `${what} is ${plainBytes} bytes, ${gzipBytes} gzip-compressed; EC2 allows at most ` +
    `${USER_DATA_MAX_BYTES} bytes of user data (before base64), so shorten it`;
}

/** The gzip header refresh writes: deflate, no flags, no time, maximum compression, Unix. */
const GZIP_HEADER = Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3);

/**
 * gzip (RFC 1952) with a fixed header and level 9: the same bytes for the same input on every
 * machine and every run (zlib's own header carries the operating system it was built for).
 */
export function gzip(data: Uint8Array): Uint8Array {
  const body = deflateRawSync(data, { level: 9 });
  const out = new Uint8Array(GZIP_HEADER.length + body.length + 8);
  out.set(GZIP_HEADER, 0);
  out.set(body, GZIP_HEADER.length);
  const trailer = new DataView(out.buffer, GZIP_HEADER.length + body.length);
  trailer.setUint32(0, crc32(data) >>> 0, true);
  trailer.setUint32(4, data.length >>> 0, true);
  return out;
}

/**
 * The content of user data as EC2 holds it (base64, maybe gzip-compressed): what the instance
 * runs. Templates are compared by this, so how the bytes were compressed never matters.
 */
export function userDataContent(base64: string): string {
  const bytes = Buffer.from(base64, "base64");
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      return new TextDecoder().decode(gunzipSync(bytes));
    } catch {
      // Not gzip after all: compared as it is.
    }
  }
  return new TextDecoder().decode(bytes);
}

/**
 * Whether an API URL is a GitHub Enterprise Server's (`https://HOST/api/v3`, as GitHub documents
 * it), whose API serves that server's repositories and not github.com's `actions/runner`.
 */
export function isEnterpriseServer(apiUrl: string): boolean {
  return /\/api\/v3\/?$/.test(new URL(apiUrl).pathname);
}

/**
 * The web URL runners register with (`config.sh --url`): the GitHub server of the API URL the
 * github-token task uses, plus the repository or organization. `https://api.github.com` serves
 * `https://github.com`, `https://HOST/api/v3` serves `https://HOST`, and `https://api.NAME.ghe.com`
 * serves `https://NAME.ghe.com`; any other URL is taken as the server itself.
 */
export function registrationUrl(
  apiUrl: string,
  scope: { repo: { owner: string; name: string } } | { org: string },
): string {
  const url = new URL(apiUrl);
  let server: string;
  if (isEnterpriseServer(apiUrl)) {
    server = `${url.origin}${url.pathname.replace(/\/api\/v3\/?$/, "")}`;
  } else if (url.hostname.startsWith("api.") && (url.pathname === "/" || url.pathname === "")) {
    server = `${url.protocol}//${url.host.slice("api.".length)}`;
  } else {
    server = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
  }
  return "org" in scope
    ? `${server}/${scope.org}`
    : `${server}/${scope.repo.owner}/${scope.repo.name}`;
}
