/**
 * The pinned command-line tools test/support/tools.sh installs in .tools/venv: shellcheck, and the
 * python3 the harness runs the bootstrap's AWS client with (no AWS CLI: the bootstrap needs none).
 * Their directory comes from REFRESH_TOOLS_BIN (set by tools.sh), else .tools/venv/bin. And the linters of what users copy, in .tools/lint
 * (REFRESH_LINT_BIN): parliament for IAM policies, zizmor for GitHub Actions workflows.
 */
import { fileURLToPath as fromFileUrl } from "node:url";

const root = fromFileUrl(new URL("../../", import.meta.url));

/** Directory holding `shellcheck` (and the virtualenv's `python3`). */
export const TOOLS_BIN: string = Deno.env.get("REFRESH_TOOLS_BIN") ?? `${root}.tools/venv/bin`;

/** A PATH with the pinned tools first, then the system's usual directories. */
export const TOOLS_PATH: string = [
  TOOLS_BIN,
  "/usr/local/sbin",
  "/usr/local/bin",
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
].join(":");

/**
 * Runs shellcheck (bash dialect) on a script given on standard input; returns its findings, ""
 * when there are none. Throws when shellcheck itself cannot run.
 */
export async function shellcheck(script: string): Promise<string> {
  let child;
  try {
    child = new Deno.Command(`${TOOLS_BIN}/shellcheck`, {
      args: ["--shell=bash", "--severity=style", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new Error(
      `cannot run ${TOOLS_BIN}/shellcheck (${error}); install it with ` +
        "`sh test/support/tools.sh deno task test`",
    );
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (code !== 0 && text === "") throw new Error(`shellcheck exited with ${code} and said nothing`);
  return text;
}

/** Directory holding `parliament` and `zizmor`. */
export const LINT_BIN: string = Deno.env.get("REFRESH_LINT_BIN") ?? `${root}.tools/lint/bin`;

/** Runs one of the linters; throws when it cannot run at all. */
async function lint(
  tool: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let output;
  try {
    output = await new Deno.Command(`${LINT_BIN}/${tool}`, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run ${LINT_BIN}/${tool} (${error}); install it with ` +
        "`sh test/support/tools.sh deno task test`",
    );
  }
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** One finding of parliament (`--json`, one object a line). */
export interface ParliamentFinding {
  issue: string;
  title: string;
  severity: "CRITICAL" | "HIGH" | "MEDIUM" | "LOW" | "INFO" | string;
  detail: unknown;
  location: Record<string, unknown>;
}

/**
 * parliament (with its community auditors) on a policy file: every finding at `minimum` severity
 * or above. parliament exits 1 when it finds something; anything else but 0 is its own failure.
 */
export async function parliament(
  file: string,
  minimum = "MEDIUM",
): Promise<ParliamentFinding[]> {
  const { code, stdout, stderr } = await lint("parliament", [
    "--json",
    "--include-community-auditors",
    "--minimum_severity",
    minimum,
    "--files",
    file,
  ]);
  if (code !== 0 && code !== 1) throw new Error(`parliament exited with ${code}: ${stderr}`);
  return stdout.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** One finding of zizmor (`--format json`), reduced to what a test reports. */
export interface ZizmorFinding {
  ident: string;
  severity: string;
  confidence: string;
  /** `file:line: fragment` of the finding's primary location. */
  where: string;
}

/**
 * zizmor, offline (no GitHub API), on workflow files: every finding at `minimum` severity or
 * above, with its default ("regular") persona. zizmor exits non-zero when it finds something and
 * prints its findings all the same; an output that is not JSON is its own failure.
 */
export async function zizmor(files: string[], minimum = "medium"): Promise<ZizmorFinding[]> {
  const { stdout, stderr } = await lint("zizmor", [
    "--offline",
    "--no-progress",
    "--format",
    "json",
    "--min-severity",
    minimum,
    ...files,
  ]);
  let findings;
  try {
    findings = JSON.parse(stdout);
  } catch {
    throw new Error(`zizmor printed no JSON: ${stdout}${stderr}`);
  }
  // deno-lint-ignore no-explicit-any
  return findings.map((f: any) => {
    // deno-lint-ignore no-explicit-any
    const primary = f.locations.find((l: any) => l.symbolic.kind === "Primary") ?? f.locations[0];
    return {
      ident: f.ident,
      severity: f.determinations.severity,
      confidence: f.determinations.confidence,
      where: `${primary.symbolic.key.Local?.verbatim_path}:${
        primary.concrete.location.start_point.row + 1
      }: ${primary.concrete.feature}`,
    };
  });
}
