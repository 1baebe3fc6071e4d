/**
 * The pinned command-line tools test/support/tools.sh installs in .tools/venv: the AWS CLI (which
 * the generated bootstrap calls) and shellcheck. Their directory comes from REFRESH_TOOLS_BIN (set
 * by tools.sh), else .tools/venv/bin.
 */
import { fileURLToPath as fromFileUrl } from "node:url";

const root = fromFileUrl(new URL("../../", import.meta.url));

/** Directory holding `aws` and `shellcheck`. */
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
