import assert from "node:assert/strict";
import { readDocs } from "./support/docs.ts";
import { type DesiredState, INPUTS, parseDesiredState } from "../lib/config.ts";
import { DEFAULT_RESOURCE_CLASSES } from "../lib/resource_pools.ts";
import { BASE_ARGS, EXAMPLE_NETWORK, TEST_PAT } from "./support/aws.ts";
import { runRefresh } from "./support/process.ts";
import { checkRefused, type InvalidInput, problemsOf, runEntry } from "./support/refused.ts";

function parse(
  args: string[],
  env: Record<string, string> = {},
  files: Record<string, string> = {},
): DesiredState {
  const desired = parseDesiredState({
    args,
    env,
    readTextFile: (path) => {
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(`No such file or directory: ${path}`);
    },
  });
  assert.notEqual(desired, "help");
  return desired as DesiredState;
}

Deno.test("config parses a complete desired state with defaults", () => {
  const d = parse(BASE_ARGS, { GITHUB_TOKEN: TEST_PAT });
  assert.equal(d.region, "us-east-1");
  assert.equal(d.table, "acme-widgets-ci-table");
  assert.equal(d.prefix, "acme-widgets");
  assert.deepEqual(d.tasks, [
    "table",
    "launch-template",
    "resource-pools",
    "parameters",
    "github-token",
    "reaper",
    "warm-pool",
  ]);
  assert.deepEqual(d.warmPool.minimum, {}, "no warm pool unless asked for");
  assert.deepEqual(d.parameters, {
    idleTimeSec: 300,
    maxRuntimeMin: 30,
    subnetIds: [EXAMPLE_NETWORK.subnetIds[0]],
  });
  assert.equal(d.launchTemplate.name, "acme-widgets-ci-launch-template");
  assert.deepEqual(d.launchTemplate.ami, { id: "ami-1e749f67" });
  assert.deepEqual(d.launchTemplate.iamInstanceProfile, { name: "runner-profile" });
  assert.equal(d.launchTemplate.keepVersions, 5);
  assert.deepEqual(d.pools.classes, DEFAULT_RESOURCE_CLASSES);
  assert.equal(d.pools.queueNames.large, "acme-widgets-large-ci-pool");
  assert.deepEqual(d.github.auth, { kind: "token", token: TEST_PAT });
  assert.deepEqual(d.github.scope, { repo: { owner: "acme", name: "widgets" } });
  assert.equal(d.github.apiUrl, "https://api.github.com");
  assert.equal(d.github.marginMin, 30);
  assert.equal(d.dryRun, false);
});

Deno.test("config lets flags win over the environment and the environment over the file", () => {
  const files = {
    "refresh.json": JSON.stringify({
      "idle-time-sec": 100,
      "max-runtime-min": 40,
      "subnet-ids": ["subnet-0000000000000000a"],
      "resource-class-config": { small: { cpu: 1, mmem: 512 } },
    }),
  };
  const d = parse(
    [
      "--region",
      "eu-west-1",
      "--config",
      "refresh.json",
      "--idle-time-sec",
      "120",
      "--only",
      "parameters",
    ],
    {
      GITHUB_REPOSITORY: "acme/widgets",
      REFRESH_IDLE_TIME_SEC: "110",
      REFRESH_MAX_RUNTIME_MIN: "45",
    },
    files,
  );
  assert.equal(d.parameters.idleTimeSec, 120);
  assert.equal(d.parameters.maxRuntimeMin, 45);
  assert.deepEqual(d.parameters.subnetIds, ["subnet-0000000000000000a"]);
  assert.deepEqual(d.pools.classes, { small: { cpu: 1, mmem: 512 } });
  assert.deepEqual(d.tasks, ["parameters"]);
});

Deno.test("config lets an explicit config file win over the ambient GitHub Actions and AWS variables", () => {
  // A central repository's workflow runs refresh for another repository's pool: Actions sets
  // GITHUB_REPOSITORY and GITHUB_API_URL to the central repository's, the credentials action
  // AWS_REGION to its own region; the config file names the pool.
  const files = {
    "pool.json": JSON.stringify({
      repo: "other/pool",
      "github-api-url": "https://ghes.example.com/api/v3",
      region: "eu-west-1",
      only: "table",
    }),
  };
  const ambient = {
    GITHUB_REPOSITORY: "acme/central",
    GITHUB_API_URL: "https://api.github.com",
    AWS_REGION: "us-east-1",
    AWS_DEFAULT_REGION: "us-east-2",
  };
  const d = parse(["--config", "pool.json"], ambient, files);
  assert.equal(d.region, "eu-west-1");
  assert.equal(d.table, "other-pool-ci-table");
  assert.deepEqual(d.github.scope, { repo: { owner: "other", name: "pool" } });
  assert.equal(d.github.apiUrl, "https://ghes.example.com/api/v3");

  // Without the file, the ambient variables still give the defaults.
  const plain = parse(["--only", "table"], ambient);
  assert.equal(plain.region, "us-east-1");
  assert.equal(plain.table, "acme-central-ci-table");
  assert.equal(plain.github.apiUrl, "https://api.github.com");

  // Flags and refresh's own variables still win over the file.
  const over = parse(
    ["--config", "pool.json", "--region", "ap-south-1"],
    { ...ambient, REFRESH_TABLE: "chosen-table", REFRESH_ONLY: "table,reaper" },
    files,
  );
  assert.equal(over.region, "ap-south-1");
  assert.equal(over.table, "chosen-table");
  assert.deepEqual(over.tasks, ["table", "reaper"]);
});

Deno.test("config reads the run's deadline and request timeout, with defaults", () => {
  const d = parse([...BASE_ARGS], { GITHUB_TOKEN: TEST_PAT });
  assert.equal(d.deadlineMin, 10);
  assert.equal(d.requestTimeoutSec, 20);
  const set = parse([...BASE_ARGS, "--deadline-min", "5"], {
    GITHUB_TOKEN: TEST_PAT,
    REFRESH_REQUEST_TIMEOUT_SEC: "3",
  });
  assert.equal(set.deadlineMin, 5);
  assert.equal(set.requestTimeoutSec, 3);
  assert.deepEqual(
    problemsOf([...BASE_ARGS, "--deadline-min", "0", "--request-timeout-sec", "301"]),
    [
      'deadline-min: expected a whole number 1-1440, got "0"',
      'request-timeout-sec: expected a whole number 1-300, got "301"',
    ],
  );
});

Deno.test("config reports a number too large for JSON by its text, not as null", () => {
  const files = {
    "big.json": '{"idle-time-sec": 1e400, "max-runtime-min": 12345678901234567890, ' +
      '"resource-class-config": {"huge": {"cpu": 2e999, "mmem": 4096}}}',
  };
  const problems = problemsOf([...BASE_ARGS, "--config", "big.json"], undefined, files);
  assert.ok(
    problems.includes(
      "idle-time-sec: expected a whole number >= 1, got 1e400 (a number too large)",
    ),
    problems.join("\n"),
  );
  assert.ok(
    problems.includes(
      "max-runtime-min: expected a whole number >= 1, got 12345678901234567890 (a number too large)",
    ),
    problems.join("\n"),
  );
  assert.match(problems.join("\n"), /resource-class-config: .*2e999 \(a number too large\)/);
  assert.doesNotMatch(problems.join("\n"), /null/);
});

Deno.test("config takes a negative number after a flag as its value and reports its range", () => {
  assert.deepEqual(
    problemsOf([...BASE_ARGS, "--orphan-grace-min", "-5", "--idle-time-sec", "-1"]),
    [
      'idle-time-sec: expected a whole number >= 1, got "-1"',
      'orphan-grace-min: expected a whole number >= 5, got "-5"',
    ],
  );
});

Deno.test("refresh exits 2 at once when a file input is endless or too large", async () => {
  const started = performance.now();
  const result = await runRefresh([
    ...BASE_ARGS,
    "--config",
    "/dev/zero",
    "--user-data",
    "/dev/zero",
  ]);
  const elapsed = performance.now() - started;
  assert.equal(result.code, 2, result.stderr);
  assert.match(
    result.stderr,
    /config: cannot read \/dev\/zero: larger than 1048576 bytes, the most refresh reads of it/,
  );
  assert.match(
    result.stderr,
    /user-data: cannot read \/dev\/zero: larger than 1048576 bytes, the most refresh reads of it/,
  );
  // A process start and two reads of 1 MiB, not an endless read.
  assert.ok(elapsed < 15_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("config splits lists on commas and spaces like fleet-actions' inputs", () => {
  const d = parse([
    ...BASE_ARGS,
    "--subnet-ids",
    "subnet-0000000000000000a subnet-0000000000000000b,subnet-0000000000000000c",
  ], {
    GITHUB_TOKEN: TEST_PAT,
  });
  assert.deepEqual(d.parameters.subnetIds, [
    "subnet-0000000000000000a",
    "subnet-0000000000000000b",
    "subnet-0000000000000000c",
  ]);
});

Deno.test("config requires only the inputs the selected tasks need", () => {
  const d = parse(["--region", "us-east-1", "--repo", "acme/widgets", "--only", "table,reaper"]);
  assert.deepEqual(d.tasks, ["table", "reaper"]);
  assert.equal(d.github.auth.kind, "none");
});

Deno.test("config keeps tasks in run order whatever the order of --only", () => {
  const d = parse([...BASE_ARGS, "--only", "reaper,table,parameters"]);
  assert.deepEqual(d.tasks, ["table", "parameters", "reaper"]);
});

Deno.test("config derives names from --org when no repository is given", () => {
  const d = parse(["--region", "us-east-1", "--org", "acme", "--only", "table,github-token"], {
    GITHUB_TOKEN: TEST_PAT,
  });
  assert.equal(d.table, "acme-ci-table");
  assert.deepEqual(d.github.scope, { org: "acme" });
});

Deno.test("config registers at organization level with --org while names follow the repository", () => {
  const d = parse([...BASE_ARGS, "--org", "acme-org"], {
    GITHUB_TOKEN: TEST_PAT,
    GITHUB_REPOSITORY: "acme/other",
  });
  assert.equal(d.table, "acme-widgets-ci-table");
  assert.deepEqual(d.github.scope, { org: "acme-org" });
});

Deno.test("config reads an explicit table name", () => {
  const d = parse([...BASE_ARGS, "--table", "shared-runner-table"], { GITHUB_TOKEN: TEST_PAT });
  assert.equal(d.table, "shared-runner-table");
});

Deno.test("config returns help for --help", () => {
  assert.equal(parseDesiredState({ args: ["--help"], env: {}, readTextFile: () => "" }), "help");
});

// Each invalid shared input: the problem names the field, the offending value and what is expected.
// A task's own invalid inputs are listed in its test file.
const INVALID: InvalidInput[] = [
  [
    "missing region",
    ["--repo", "acme/widgets", "--only", "table"],
    {},
    /region: required; set --region or AWS_REGION/,
  ],
  [
    "malformed region",
    ["--region", "useast1", "--repo", "a/b", "--only", "table"],
    {},
    /region: "useast1" is not an AWS region name like us-east-1/,
  ],
  [
    "malformed repository",
    ["--region", "us-east-1", "--repo", "widgets", "--only", "table"],
    {},
    /repo: "widgets" is not owner\/name/,
  ],
  [
    "no repository, organization or table",
    ["--region", "us-east-1", "--only", "table"],
    {},
    /table: required; set --table, or --repo to derive it/,
  ],
  [
    "unknown task",
    [...BASE_ARGS, "--only", "table,teardown"],
    undefined,
    /only: unknown task "teardown", expected one of table, launch-template/,
  ],
  [
    "unknown flag",
    [...BASE_ARGS, "--amii", "ami-1e749f67"],
    undefined,
    /flags: Unknown option '--amii'/,
  ],
  [
    "secret in config file",
    [...BASE_ARGS, "--config", "secret.json"],
    undefined,
    /config: "github-token" is a secret and is read from GITHUB_TOKEN only, not a file/,
  ],
  [
    "unknown config key",
    [...BASE_ARGS, "--config", "typo.json"],
    undefined,
    /config: unknown key "idle-time" in typo.json/,
  ],
];

const FILES: Record<string, string> = {
  "secret.json": JSON.stringify({ "github-token": "ghp_in_a_file" }),
  "typo.json": JSON.stringify({ "idle-time": 5 }),
};

Deno.test("config rejects invalid input with a message and sends no request", (t) =>
  checkRefused(t, INVALID, FILES));

Deno.test("config lists every problem at once", () => {
  const problems = problemsOf([
    "--repo",
    "acme/widgets",
    "--ami",
    "bad",
    "--subnet-ids",
    "nope",
    "--idle-time-sec=-1",
    "--bogus",
    "--resource-class-config",
    '{"a":{"cpu":0,"mmem":1},"A":{"cpu":1,"mmem":1}}',
  ], {});
  assert.deepEqual(problems.map((p) => p.split(":")[0]).sort(), [
    "ami",
    "flags",
    "github-token",
    "iam-instance-profile",
    "idle-time-sec",
    "region",
    "resource-class-config",
    "resource-class-config",
    "security-group-ids",
    "subnet-ids",
  ]);
});

Deno.test("help lists every input with its environment variable and default", async () => {
  const result = await runEntry(["--help"], {});
  assert.equal(result.code, 0);
  for (const input of INPUTS) {
    if (input.secret) assert.match(result.stdout, new RegExp(`\\(env\\) ${input.env![0]}`));
    else assert.ok(result.stdout.includes(`--${input.name}`), `--${input.name} missing from help`);
    if (input.default !== undefined) {
      assert.ok(result.stdout.includes(`default ${input.default}`), `default of ${input.name}`);
    }
  }
});

Deno.test("the documentation names every input", () => {
  const readme = readDocs();
  for (const input of INPUTS) {
    const name = input.secret ? input.env![0] : `--${input.name}`;
    assert.ok(readme.includes(`\`${name}\``), `README does not document ${name}`);
  }
});

/** The relative modules a lib/ module imports or re-exports, types included, as file URLs. */
async function importsOf(module: URL): Promise<URL[]> {
  const text = await Deno.readTextFile(module);
  const specifiers = [...text.matchAll(/^(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"/gm)];
  return specifiers.map((m) => new URL(m[1], module));
}

Deno.test("no module config.ts imports leads back to config.ts, not even for types", async () => {
  const config = new URL("../lib/config.ts", import.meta.url);
  // Depth-first from config.ts's imports, keeping the path that reached each module.
  const seen = new Set<string>();
  const stack: URL[][] = (await importsOf(config)).map((m) => [m]);
  while (stack.length > 0) {
    const path = stack.pop()!;
    const module = path[path.length - 1];
    if (seen.has(module.href)) continue;
    seen.add(module.href);
    const lib = new URL("../lib/", import.meta.url).href;
    for (const next of await importsOf(module)) {
      const route = ["config.ts", ...path, next].map((u) =>
        typeof u === "string" ? u : u.href.replace(lib, "")
      );
      assert.notEqual(next.href, config.href, `an import cycle: ${route.join(" -> ")}`);
      stack.push([...path, next]);
    }
  }
  assert.ok(seen.has(new URL("task.ts", config).href), "the walk reached the task modules");
});

Deno.test("the reaper's modules import nothing from config.ts, not even types", async () => {
  const folder = new URL("../lib/reaper/", import.meta.url);
  const files = [new URL("../lib/reaper.ts", import.meta.url)];
  for await (const entry of Deno.readDir(folder)) files.push(new URL(entry.name, folder));
  assert.ok(files.length > 5, `${files.length} reaper modules`);
  for (const file of files) {
    const text = await Deno.readTextFile(file);
    assert.doesNotMatch(text, /^import\s[^;]*?from\s+"[./]*config\.ts"/m, file.pathname);
  }
});
