/**
 * Copy-paste adoption: `deno run <raw URL of refresh.ts>` with no deno.json beside it. The checkout
 * is served on 127.0.0.1 as text/plain, as raw file hosts serve it, and refresh runs from there
 * in an empty working directory with the scoped permissions the README documents.
 */
import assert from "node:assert/strict";
import { baseArgs } from "./support/aws.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./support/moto.ts";

const root = new URL("../", import.meta.url);

/** Serves the checkout read-only as text/plain, recording the paths asked for. */
function serveCheckout() {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requested.push(path);
    const file = new URL(`.${path}`, root);
    if (path.includes("..") || !file.href.startsWith(root.href)) {
      return new Response("forbidden", { status: 403 });
    }
    try {
      const body = await Deno.readTextFile(file);
      return new Response(body, { headers: { "content-type": "text/plain; charset=utf-8" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const host = `127.0.0.1:${server.addr.port}`;
  return { host, url: `http://${host}/refresh.ts`, requested, close: () => server.shutdown() };
}

/** Runs `deno run <permissions> <url> <args>` in an empty directory. */
async function runRemote(url: string, permissions: string[], args: string[]) {
  const cwd = await Deno.makeTempDir();
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...permissions, url, ...args],
      cwd,
      env: { ...AWS_ENV, NO_COLOR: "1", GITHUB_ACTIONS: "", GITHUB_TOKEN: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const left = [...Deno.readDirSync(cwd)].map((e) => e.name);
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    return {
      code: output.code,
      stdout: decode(output.stdout),
      stderr: decode(output.stderr),
      left,
    };
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
}

/** The README's flags, with the network scoped to moto's address. */
function permissions(cwd = "."): string[] {
  const moto = new URL(MOTO_URL).host;
  return [
    `--allow-net=${moto}`,
    "--allow-env",
    `--allow-read=${cwd}`,
    "--allow-sys=osRelease,homedir",
  ];
}

Deno.test("refresh prints its help when run from a URL with no deno.json beside it", async () => {
  const served = serveCheckout();
  try {
    const run = await runRemote(served.url, permissions(), ["--help"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^refresh: reconcile a pool of self-hosted GitHub Actions runners/);
    assert.match(run.stdout, /exit codes: 0 ok, 1 a task failed, 2 invalid desired state/);
    assert.ok(served.requested.includes("/lib/config.ts"), "modules load from the same URL base");
    assert.ok(!served.requested.includes("/deno.json"), "no config file is fetched");
    assert.deepEqual(run.left, [], "nothing is written to the working directory");
  } finally {
    await served.close();
  }
});

Deno.test("refresh makes a real dry run against moto when run from a URL", async () => {
  const network = await resetMoto();
  const served = serveCheckout();
  try {
    const run = await runRemote(served.url, permissions(), [
      ...baseArgs(network),
      "--only",
      "table,parameters",
      "--dry-run",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^dry run: nothing was written$/m);
    assert.match(run.stdout, /^ {2}would create table acme-widgets-ci-table/m);
    assert.match(run.stdout, /^ {2}would write metadata subnet_ids/m);
    assert.match(run.stdout, /; \d+ API calls, 0 writes$/m);
  } finally {
    await served.close();
  }
  const tables = await fetch(MOTO_URL, {
    method: "POST",
    headers: {
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": "DynamoDB_20120810.ListTables",
      authorization:
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x",
    },
    body: "{}",
  }).then((r) => r.json());
  assert.deepEqual(tables.TableNames, [], "the dry run created nothing");
});

Deno.test("refresh run from a URL exits 2 on an invalid desired state before any call", async () => {
  const served = serveCheckout();
  try {
    const run = await runRemote(served.url, ["--allow-env", "--allow-read=."], [
      "--region",
      "us-east-1",
      "--repo",
      "acme/widgets",
      "--only",
      "table,nope",
    ]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /only: unknown task "nope"/);
  } finally {
    await served.close();
  }
});
