import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));

/**
 * The environment of a user's shell: Deno on PATH, nothing of the test harness's (no
 * REFRESH_MOTO_PYTHON, no AWS settings), so the task must find moto by itself.
 */
function plainEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
    NO_COLOR: "1",
  };
  for (
    const name of ["HOME", "DENO_DIR", "DENO_CERT", "SSL_CERT_FILE", "HTTPS_PROXY", "NO_PROXY"]
  ) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

Deno.test("demo builds the pool and then writes nothing when run as `deno task demo`", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo"],
    cwd: root,
    clearEnv: true,
    env: plainEnv(),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, `${stdout}\n${stderr}`);
  assert.match(stdout, /^table +changed +acme-widgets-ci-table: create, enable-ttl$/m);
  assert.match(stdout, /^second run made 0 writes: refresh is idempotent\.$/m);
});
