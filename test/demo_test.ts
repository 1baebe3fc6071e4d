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

Deno.test("demo builds the pool, writes nothing the second time, and shows a runner's whole life when run as `deno task demo`", async () => {
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

  // The runner's life, step by step, each with its time since the start.
  const steps = [...stdout.matchAll(/^\[ *(\d+\.\d) s\] (.*)$/gm)].map((m) => m[2]);
  const id = /provision launches (i-[0-9a-f]+) from acme-widgets-ci-launch-template version 1/
    .exec(stdout)?.[1];
  assert.ok(id, stdout);
  const expected = [
    /^refresh builds the pool/,
    new RegExp(`^provision launches ${id} `),
    new RegExp(`^${id} boots: its user data \\(the generated bootstrap\\) runs$`),
    new RegExp(
      `^provision: runner ${id}-1 registered for run 1001 \\(UD_REG_OK, [\\d.]+ s after launch\\); it takes the run's job$`,
    ),
    new RegExp(
      `^release: the job is done; ${id}-1 deregistered \\(UD_REMOVE_REG_REMOVE_RUN_OK, [\\d.]+ s\\)`,
    ),
    new RegExp(
      `^claim: provision takes the idle instance for run 1002; runner ${id}-2 registered \\(UD_REG_OK, [\\d.]+ s after the claim\\) and runs the job$`,
    ),
    new RegExp(
      `^release: ${id}-2 deregistered \\(UD_REMOVE_REG_REMOVE_RUN_OK, [\\d.]+ s\\); idle again$`,
    ),
    /^no run claims it within the idle time: its record expires/,
    new RegExp(`^the reaper terminated ${id} and removed its items from the table$`),
    /^done: /,
  ];
  assert.equal(steps.length, expected.length, steps.join("\n"));
  expected.forEach((pattern, i) => assert.match(steps[i], pattern));

  // The pool view after the release: one idle instance of the current template version.
  const idle = stdout.slice(stdout.indexOf("── refresh: the pool holds one idle instance ──"));
  assert.match(idle, /^ +class +idle +claimed +running .*\n +large +1 +0 +0 +0 +1 +0 /m);
  assert.match(stdout, new RegExp(`^  terminate instance ${id}: expired idle`, "m"));
  assert.match(stdout, /runners left registered: 0$/m);
  // No secret in the output: the PAT and the registration token are masked.
  assert.doesNotMatch(stdout + stderr, /ghp_Demo|AREG\d{4}/);
});
