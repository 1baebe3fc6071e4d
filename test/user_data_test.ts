import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { gunzipSync } from "node:zlib";
import {
  type BootstrapInputs,
  encodeUserData,
  generatedScript,
  gzip,
  isEnterpriseServer,
  plannedScript,
  registrationUrl,
  USER_DATA_MAX_BYTES,
  userDataContent,
  userDataSizeProblem,
} from "../lib/user_data.ts";
import { bulkySetupScript } from "./support/bulky_setup_script.ts";

/** Text that compresses about as badly as text can: random base64, 76 to a line. */
function incompressible(bytes: number): string {
  const random = new Uint8Array(Math.ceil(bytes * 0.75));
  for (let i = 0; i < random.length; i += 65536) {
    crypto.getRandomValues(random.subarray(i, i + 65536));
  }
  const text = Buffer.from(random).toString("base64").slice(0, bytes);
  return text.replace(/(.{76})/g, "$1\n").slice(0, bytes);
}

/** `gzip -dc` of some bytes, by the real gzip. */
async function gunzipWithGzip(bytes: Uint8Array): Promise<string> {
  const child = new Deno.Command("gzip", { args: ["-dc"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  const out = await child.output();
  assert.equal(out.code, 0, "gzip -dc accepts it");
  return new TextDecoder().decode(out.stdout);
}

const INPUTS: BootstrapInputs = {
  table: "acme-widgets-ci-table",
  region: "us-east-1",
  githubUrl: "https://github.com/acme/widgets",
  poolLabel: "refresh-pool-0123456789abcdef",
  runner: { version: "2.334.0" },
};

Deno.test("encodeUserData keeps a script of up to 16 KB as it is", () => {
  const script = `#!/bin/bash\n${"#".repeat(USER_DATA_MAX_BYTES - 13)}\n`;
  assert.equal(new TextEncoder().encode(script).length, USER_DATA_MAX_BYTES);
  const encoded = encodeUserData(script);
  assert.ok(!("tooLarge" in encoded));
  assert.equal(encoded.compressed, false);
  assert.equal(new TextDecoder().decode(encoded.bytes), script);
});

Deno.test("encodeUserData counts bytes, not characters, against the 16 KB", () => {
  // 8193 two-byte characters: 8193 characters, 16386 bytes.
  const script = "é".repeat(8193);
  const encoded = encodeUserData(script);
  assert.ok(!("tooLarge" in encoded));
  assert.equal(encoded.compressed, true);
  assert.equal(encoded.plainBytes, 16386);
});

Deno.test("encodeUserData gzips a script over 16 KB and the result decompresses to the script", async () => {
  const script = `#!/bin/bash\n${"echo 'installing the tools we need'\n".repeat(800)}`;
  const encoded = encodeUserData(script);
  assert.ok(!("tooLarge" in encoded));
  assert.equal(encoded.compressed, true);
  assert.ok(encoded.plainBytes > USER_DATA_MAX_BYTES);
  assert.ok(encoded.bytes.length < USER_DATA_MAX_BYTES);
  assert.equal(await gunzipWithGzip(encoded.bytes), script);
  assert.equal(new TextDecoder().decode(gunzipSync(encoded.bytes)), script);
});

Deno.test("gzip writes the same bytes every time: no name, no time, fixed level, Unix", () => {
  const data = new TextEncoder().encode("#!/bin/bash\necho hello\n".repeat(100));
  const first = gzip(data);
  const second = gzip(data);
  assert.deepEqual(first, second);
  // ID1 ID2, deflate, no flags (so no file name or comment), MTIME 0, XFL 2 (level 9), OS 3.
  assert.deepEqual([...first.slice(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
  // Trailer: CRC-32 and size of the input, little-endian.
  const size = new DataView(first.buffer).getUint32(first.length - 4, true);
  assert.equal(size, data.length);
});

Deno.test("encodeUserData gives both sizes when even gzip does not fit", () => {
  const encoded = encodeUserData(incompressible(40_000));
  assert.ok("tooLarge" in encoded);
  assert.equal(encoded.tooLarge.plainBytes, 40_000);
  assert.ok(encoded.tooLarge.gzipBytes > USER_DATA_MAX_BYTES, String(encoded.tooLarge.gzipBytes));
});

Deno.test("userDataSizeProblem names the source and both sizes", () => {
  const script = incompressible(40_000);
  const file = userDataSizeProblem({ kind: "file", path: "/big.sh", script });
  assert.match(
    file!,
    /^user-data: \/big\.sh is 40000 bytes, \d+ gzip-compressed; EC2 allows at most 16384 bytes of user data \(before base64\), so shorten it$/,
  );
  const generated = userDataSizeProblem({
    kind: "bootstrap",
    inputs: { ...INPUTS, preRunnerScript: script },
  });
  assert.match(
    generated!,
    /^pre-runner-script: the generated bootstrap with the pre-runner script is \d+ bytes, \d+ gzip-compressed; EC2 allows at most 16384/,
  );
  assert.equal(
    userDataSizeProblem({ kind: "file", path: "/small.sh", script: "#!/bin/sh\n" }),
    undefined,
  );
});

Deno.test("plannedScript has the real script's length before the checksums are known", () => {
  const checksums = { x64: "a".repeat(64), arm64: "b".repeat(64) };
  const planned = plannedScript({ kind: "bootstrap", inputs: INPUTS });
  const real = generatedScript(INPUTS, checksums);
  assert.equal(planned.length, real.length);
  assert.ok(real.includes(checksums.x64) && real.includes(checksums.arm64));
  assert.throws(() => generatedScript(INPUTS), /no runner checksums/);
});

Deno.test("userDataContent reads plain and gzip-compressed user data alike", () => {
  const script = "#!/bin/bash\necho hello\n";
  const plain = Buffer.from(script).toString("base64");
  const packed = Buffer.from(gzip(new TextEncoder().encode(script))).toString("base64");
  assert.equal(userDataContent(plain), script);
  assert.equal(userDataContent(packed), script);
  // Bytes that only start like gzip are compared as they are.
  const fake = Buffer.from([0x1f, 0x8b, 0x41, 0x42]).toString("base64");
  assert.equal(userDataContent(fake).length, 4);
});

Deno.test("registrationUrl derives the GitHub server from the API URL, with the scope", () => {
  const repo = { repo: { owner: "acme", name: "widgets" } };
  const org = { org: "acme" };
  const cases: [string, typeof repo | typeof org, string][] = [
    ["https://api.github.com", repo, "https://github.com/acme/widgets"],
    ["https://api.github.com", org, "https://github.com/acme"],
    ["https://ghe.example.com/api/v3", repo, "https://ghe.example.com/acme/widgets"],
    ["https://ghe.example.com/api/v3/", org, "https://ghe.example.com/acme"],
    ["https://api.octocorp.ghe.com", org, "https://octocorp.ghe.com/acme"],
    ["http://127.0.0.1:8080", repo, "http://127.0.0.1:8080/acme/widgets"],
  ];
  for (const [apiUrl, scope, expected] of cases) {
    assert.equal(registrationUrl(apiUrl, scope), expected, apiUrl);
  }
});

Deno.test("isEnterpriseServer knows a GHES API URL by its /api/v3 path", () => {
  assert.equal(isEnterpriseServer("https://ghe.example.com/api/v3"), true);
  assert.equal(isEnterpriseServer("https://ghe.example.com/api/v3/"), true);
  assert.equal(isEnterpriseServer("https://api.github.com"), false);
  assert.equal(isEnterpriseServer("http://127.0.0.1:8080"), false);
});

Deno.test("the generated bootstrap leaves room for a setup script of 2.6 KB compressed", async () => {
  const { script } = await bulkySetupScript();
  const setupGzip = gzip(new TextEncoder().encode(script)).length;
  assert.ok(setupGzip >= 2600, `the setup script is only ${setupGzip} bytes compressed`);
  const source = { kind: "bootstrap" as const, inputs: { ...INPUTS, preRunnerScript: script } };
  assert.equal(userDataSizeProblem(source), undefined);
  const encoded = encodeUserData(plannedScript(source));
  assert.ok(!("tooLarge" in encoded) && encoded.compressed);
  assert.ok(encoded.bytes.length <= USER_DATA_MAX_BYTES);
  // The script is in the user data byte for byte, its comment and blank lines included.
  assert.ok(new TextDecoder().decode(gunzipSync(encoded.bytes)).includes(script));
});
