/**
 * `--every` end to end: refresh.ts as long-lived processes on one pool, each talking to AWS
 * through a proxy of its own (test/support/fault_proxy.ts) so its calls can be told apart. One
 * loop reconciles, the other is a standby that makes no EC2 call; a one-shot run beside them
 * writes nothing; SIGKILL the leader and the standby takes over; SIGTERM ends a loop with exit 0.
 */
import assert from "node:assert/strict";
import { baseArgs, TEST_PAT } from "../support/aws.ts";
import { startFaultProxy } from "../support/fault_proxy.ts";
import { startFakeGithub } from "../support/github.ts";
import { AWS_ENV, resetMoto } from "../support/moto.ts";
import { PERMISSIONS, REFRESH, runRefresh } from "../support/process.ts";

/** A refresh process whose output is collected as it comes. */
function start(args: string[], env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, REFRESH, ...args],
    env: { ...AWS_ENV, NO_COLOR: "1", GITHUB_ACTIONS: "", GITHUB_TOKEN: TEST_PAT, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = { stdout: "", stderr: "" };
  const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) out[key] += chunk;
  };
  const done = Promise.all([collect(child.stdout, "stdout"), collect(child.stderr, "stderr")]);
  return { child, out, done };
}

async function until(what: string, ms: number, check: () => boolean, show: () => string) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}\n${show()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return ms - (deadline - Date.now());
}

Deno.test("two --every loops on one pool: one reconciles, the other stands by with no EC2 call; a one-shot run beside them writes nothing; the standby takes over from a killed leader; SIGTERM ends a loop with exit 0", async () => {
  const network = await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const args = [
    ...baseArgs(network),
    "--github-api-url",
    gh.url,
    "--only",
    "table,reaper",
    "--every",
    "5",
    "--lease-sec",
    "10",
  ];
  // The table first (a new account: the first run makes it), so both loops meet the lease.
  const made = await runRefresh(["--only", "table", ...baseArgs(network)]);
  assert.equal(made.code, 0, made.stderr);
  await using proxyA = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
  await using proxyB = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
  const a = start(args, { AWS_ENDPOINT_URL: proxyA.url });
  const show = () =>
    `--- a ---\n${a.out.stdout}${a.out.stderr}\n--- b ---\n${b?.out.stdout}${b?.out.stderr}`;
  let b: ReturnType<typeof start> | undefined;
  try {
    await until("the first loop's first cycle", 60_000, () => /^reaper /m.test(a.out.stdout), show);
    b = start(args, { AWS_ENDPOINT_URL: proxyB.url });
    await until(
      "the second loop standing by",
      60_000,
      () => /standby: lease held by/.test(b!.out.stderr),
      show,
    );
    await new Promise((resolve) => setTimeout(resolve, 6_000)); // a cycle of both
    const ec2 = (proxy: typeof proxyA) =>
      proxy.timeline.filter((t) => t.operation.startsWith("EC2.")).length;
    assert.equal(ec2(proxyB), 0, "the standby made an EC2 call");
    assert.ok(ec2(proxyA) > 0);
    assert.equal(b.out.stdout, "", "the standby reconciled");

    // A one-shot run beside them: says who holds the lease, writes nothing, exit 0.
    await using proxyC = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
    const once = await runRefresh(
      args.filter((x, i) => x !== "--every" && args[i - 1] !== "--every"),
      {
        GITHUB_TOKEN: TEST_PAT,
        AWS_ENDPOINT_URL: proxyC.url,
      },
    );
    assert.equal(once.code, 0, once.stderr);
    assert.match(
      once.stdout,
      /^operations: lease held by .* until .*: another refresh is reconciling this pool; this run writes nothing$/m,
    );
    assert.deepEqual(
      proxyC.timeline.map((t) => t.operation).filter((o) => !o.endsWith("GetItem")),
      ["DynamoDB.PutItem"],
    );

    // The leader dies without a word: the standby takes over once its lease has lapsed.
    const killed = Date.now();
    a.child.kill("SIGKILL");
    await a.done;
    await until("the standby reconciling", 150_000, () => /^reaper /m.test(b!.out.stdout), show);
    const tookOverSec = (Date.now() - killed) / 1000;
    assert.ok(tookOverSec < 150, `took over after ${tookOverSec} s`);

    // SIGTERM: the cycle in flight ends, the lease is released, exit 0.
    const stopping = Date.now();
    b.child.kill("SIGTERM");
    const status = await b.child.status;
    await b.done;
    assert.equal(status.code, 0, show());
    assert.ok(Date.now() - stopping < 60_000);
    assert.match(b.out.stderr, /stopped by a signal after its cycle; lease released/);
    console.log(`standby took over ${tookOverSec.toFixed(1)} s after the leader's SIGKILL`);
  } finally {
    for (const p of [a, b]) {
      try {
        p?.child.kill("SIGKILL");
      } catch {
        // already ended
      }
      await p?.done;
    }
  }
});
