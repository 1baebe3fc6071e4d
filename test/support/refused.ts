/**
 * Checks that an invalid desired state is refused the way the standards ask: the parser lists the
 * problem (the input, the offending value, what is expected), and the entry exits 2 with it on
 * stderr, prints nothing on stdout, and sends no request anywhere. Each task's test file lists the
 * invalid inputs of that task; `test/config_test.ts` lists the shared ones.
 */
import assert from "node:assert/strict";
import { ConfigError, parseDesiredState } from "../../lib/config.ts";
import { main } from "../../refresh.ts";
import { TEST_PAT } from "./aws.ts";

/** A name, the flags, the environment (undefined: a GitHub token) and the problem expected. */
export type InvalidInput = [
  name: string,
  args: string[],
  env: Record<string, string> | undefined,
  expected: RegExp,
];

/** Every problem the parser finds in `args`, or a failed assertion when it finds none. */
export function problemsOf(
  args: string[],
  env: Record<string, string> = { GITHUB_TOKEN: TEST_PAT },
  files: Record<string, string> = {},
): string[] {
  try {
    parseDesiredState({ args, env, readTextFile: reader(files) });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

/** One test step per invalid input: listed by the parser, refused by the entry before any call. */
export async function checkRefused(
  t: Deno.TestContext,
  invalid: InvalidInput[],
  files: Record<string, string> = {},
): Promise<void> {
  for (const [name, args, env, expected] of invalid) {
    await t.step(name, async () => {
      const problems = problemsOf(args, env ?? { GITHUB_TOKEN: TEST_PAT }, files);
      assert.ok(
        problems.some((p) => expected.test(p)),
        `expected a problem matching ${expected}, got:\n${problems.join("\n")}`,
      );
      const s = sentinel();
      try {
        const result = await runEntry(args, {
          ...(env ?? { GITHUB_TOKEN: TEST_PAT }),
          AWS_ENDPOINT_URL: s.url,
          GITHUB_API_URL: s.url,
          AWS_ACCESS_KEY_ID: "x",
          AWS_SECRET_ACCESS_KEY: "x",
        }, files);
        assert.equal(result.code, 2);
        assert.match(result.stderr, expected);
        assert.equal(result.stdout, "");
        assert.deepEqual(s.seen, []);
      } finally {
        await s.close();
      }
    });
  }
}

function reader(files: Record<string, string>) {
  return (path: string) => {
    if (path in files) return files[path];
    throw new Deno.errors.NotFound(`No such file or directory: ${path}`);
  };
}

/**
 * A server that records every request: refresh is pointed at it for both AWS and GitHub, so a test
 * can prove a bad desired state sends nothing anywhere.
 */
function sentinel() {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen.push(`${req.method} ${req.url}`);
    return new Response("{}", { status: 500 });
  });
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  return { url, seen, close: () => server.shutdown() };
}

/** Runs the entry in-process and returns its exit code, stdout and stderr. */
export async function runEntry(
  args: string[],
  env: Record<string, string>,
  files: Record<string, string> = {},
) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, env, {
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    readTextFile: reader(files),
  });
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}
