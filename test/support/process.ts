/** Runs refresh.ts as a separate process, with the permissions the README gives users. */
import { AWS_ENV } from "./moto.ts";

export const REFRESH = new URL("../../refresh.ts", import.meta.url).pathname;

/** The Deno permission flags the README documents for running refresh. */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-sys=osRelease,homedir",
];

export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Spawns `deno run <permissions> refresh.ts <args>` against moto (plus `env`). */
export async function runRefresh(
  args: string[],
  env: Record<string, string> = {},
  script: string = REFRESH,
): Promise<ProcessResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, script, ...args],
    env: { ...AWS_ENV, NO_COLOR: "1", GITHUB_ACTIONS: "", GITHUB_STEP_SUMMARY: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}
