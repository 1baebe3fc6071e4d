/**
 * `deno task demo`: the whole job on this machine, with no AWS account and no GitHub token.
 *
 * Starts moto (an AWS emulator) and a fake GitHub API on 127.0.0.1, runs refresh twice with the
 * same desired state, and shows that the first run builds the pool (table, launch template with
 * the generated bootstrap and a small setup script, queues, parameters, registration token) and
 * the second run changes nothing. Exits 1 if the second run wrote anything.
 *
 * The fake GitHub also serves the `actions/runner` release of the default runner version, with
 * made-up checksums, so refresh looks them up as it would on github.com.
 */
import { main } from "../../refresh.ts";
import { TASKS } from "../../lib/config.ts";
import { sha256 } from "../../lib/contract.ts";
import { packageName } from "../../lib/runner_release.ts";
import { DEFAULT_RUNNER_VERSION } from "../../lib/user_data.ts";
import { startFakeGithub } from "./github.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./moto.ts";

/** A PAT-shaped token the fake GitHub accepts; refresh masks it in everything it prints. */
const DEMO_PAT = "ghp_DemoPersonalAccessToken00000000000000";

const dim = (text: string) => Deno.noColor ? text : `\x1b[2m${text}\x1b[22m`;
const bold = (text: string) => Deno.noColor ? text : `\x1b[1m${text}\x1b[22m`;

// The AWS SDK's credential chain reads the process environment.
for (const [key, value] of Object.entries(AWS_ENV)) Deno.env.set(key, value);

// An empty account with a VPC, two subnets and a security group for the runners.
const network = await resetMoto();
const version = DEFAULT_RUNNER_VERSION;
const github = startFakeGithub({
  tokens: [DEMO_PAT],
  releases: [{
    repository: "actions/runner",
    tag_name: `v${version}`,
    assets: (["x64", "arm64"] as const).map((arch) => ({
      name: packageName(arch, version),
      digest: `sha256:${sha256(`demo ${arch} package`)}`,
    })),
  }],
});
// The operator's own setup, run on each instance before the runner starts.
const setup = await Deno.makeTempFile({ suffix: ".sh" });
await Deno.writeTextFile(setup, "#!/bin/bash\ndnf install -y git docker\n");

const args = [
  "--region",
  "us-east-1",
  "--repo",
  "acme/widgets",
  "--ami",
  "ami-1e749f67",
  "--iam-instance-profile",
  "runner-profile",
  "--security-group-ids",
  network.securityGroupId,
  "--subnet-ids",
  network.subnetIds.join(","),
  "--pre-runner-script",
  setup,
  "--github-api-url",
  github.url,
];
const env = { ...AWS_ENV, GITHUB_TOKEN: DEMO_PAT };

console.log(bold("refresh demo"));
console.log(dim(`moto (AWS emulator) at ${MOTO_URL}, fake GitHub API at ${github.url}`));
console.log(dim(`tasks: ${TASKS.join(", ")}`));
console.log(dim(`command: refresh.ts ${args.join(" ")}\n`));

async function run(title: string): Promise<{ code: number; writes: number }> {
  console.log(bold(`── ${title} ──`));
  const started = performance.now();
  let writes = -1;
  const code = await main(args, env, {
    stdout: (text) => {
      console.log(text);
      const m = /(\d+) writes$/m.exec(text);
      if (m) writes = Number(m[1]);
    },
    stderr: (text) => console.error(dim(text)),
    readTextFile: (path) => Deno.readTextFileSync(path),
  });
  console.log(dim(`(exit code ${code}, ${Math.round(performance.now() - started)} ms)\n`));
  return { code, writes };
}

const first = await run("first run: builds the pool");
const second = await run("second run, same desired state: nothing to do");
await Deno.remove(setup);
await github.close();

const ok = first.code === 0 && second.code === 0 && second.writes === 0;
console.log(
  ok
    ? bold(`second run made ${second.writes} writes: refresh is idempotent.`)
    : bold(`unexpected: exit codes ${first.code}/${second.code}, ${second.writes} writes`),
);
console.log(
  dim(`the registration token came from the fake GitHub: ${github.issued.length} issued`),
);
// Exiting (rather than returning) also stops moto, which would keep the process alive.
Deno.exit(ok ? 0 : 1);
