/**
 * The AWS emulator for tests: one moto server per test process, started on a free port on
 * 127.0.0.1 when this module is first imported, reset before each test with {@link resetMoto},
 * and stopped when the process ends (it also exits by itself when its stdin closes).
 *
 * moto's Python comes from REFRESH_MOTO_PYTHON (set by test/support/tools.sh), else
 * .tools/venv/bin/python, else python3.
 */
import { fileURLToPath as fromFileUrl } from "node:url";

const root = fromFileUrl(new URL("../../", import.meta.url));

function python(): string {
  const fromEnv = Deno.env.get("REFRESH_MOTO_PYTHON");
  if (fromEnv) return fromEnv;
  try {
    Deno.statSync(`${root}.tools/venv/bin/python`);
    return `${root}.tools/venv/bin/python`;
  } catch {
    return "python3";
  }
}

async function start(): Promise<{ url: string; process: Deno.ChildProcess }> {
  const process = new Deno.Command(python(), {
    args: [fromFileUrl(new URL("./moto_server.py", import.meta.url))],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
    env: { MOTO_ENABLE_AMI_VALIDATION: "true" },
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(
        `moto did not start: run \`${python()} test/support/moto_server.py\` to see why, ` +
          "or install it with `sh test/support/tools.sh deno task test`",
      );
    }
    text += value;
  }
  reader.releaseLock();
  process.stdout.cancel().catch(() => {});
  return { url: `http://127.0.0.1:${Number(text.trim())}`, process };
}

const server = await start();
globalThis.addEventListener("unload", () => {
  try {
    server.process.kill("SIGKILL");
  } catch {
    // already gone
  }
});

/** Base URL of the running moto server. */
export const MOTO_URL: string = server.url;

/** Forgets every resource moto holds, so each test starts from an empty account. */
export async function resetMoto(): Promise<void> {
  const response = await fetch(`${MOTO_URL}/moto-api/reset`, { method: "POST" });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`moto reset failed: ${response.status}`);
}

/** Environment for a refresh process (or SDK) pointed at moto with dummy credentials. */
export const AWS_ENV: Record<string, string> = {
  AWS_ENDPOINT_URL: MOTO_URL,
  AWS_ACCESS_KEY_ID: "testing",
  AWS_SECRET_ACCESS_KEY: "testing",
  AWS_REGION: "us-east-1",
  AWS_EC2_METADATA_DISABLED: "true",
};
