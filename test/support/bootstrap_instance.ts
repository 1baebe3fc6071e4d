/**
 * Runs the generated bootstrap for real, as one pool instance would, with everything on
 * 127.0.0.1: a pool table and an instance really launched in moto (tagged `InitialRunId` and
 * `AllowSelfTermination=true`, as provision tags them), a fake instance-metadata server answering
 * with that instance's id and tags, a fake runner package, the registration token record, and a
 * {@link ControlPlane} on the table. The script runs with bash in a temporary directory
 * (REFRESH_BOOTSTRAP_DIR, REFRESH_LOG_FILE and REFRESH_IMDS_ENDPOINT point into the harness,
 * REFRESH_SYSTEMD=off, the runner user is {@link TEST_RUNNER_USER}, its sudoers file in the
 * harness); AWS_ENDPOINT_URL is moto's, or a proxy's in front of it. No AWS credentials in the
 * environment: the bootstrap signs with the fake metadata server's instance role credentials.
 * Harmless stand-ins for `ldconfig`, `apt-get` and `dnf` come first on PATH, so libicu can be
 * missing and installed without touching the machine.
 *
 * Every process the instance starts carries a marker in its environment; {@link
 * BootstrapInstance.kill} (also on dispose) SIGKILLs all of them, the runner's own session
 * included.
 *
 *     const network = await resetMoto();
 *     await using instance = await bootInstance({ name: "cycle", runId: "1001", subnetId: network.subnetIds[0] });
 *     const outcome = await instance.plane.provision(instance.instanceId, "1001");
 */
import { join } from "node:path";
import {
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CreateTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { bootstrapScript, type BootstrapSpec } from "../../lib/bootstrap.ts";
import { tableDefinition } from "../../lib/table.ts";
import { poolRunnerLabel } from "../../lib/contract.ts";
import { ControlPlane } from "./control_plane.ts";
import { type FakeImds, startFakeImds } from "./imds.ts";
import { MOTO_URL } from "./moto.ts";
import {
  allowTraversal,
  type FakeRunnerPackage,
  type GithubSide,
  readGithubSide,
  startFakeRunnerPackage,
} from "./runner_package.ts";
import { TOOLS_PATH } from "./tools_bin.ts";
import { statCpuSeconds } from "./proc_stat.ts";

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "testing", secretAccessKey: "testing" };
/** One of moto's built-in images (the harness turns AMI validation on). */
const AMI = "ami-1e749f67";

/** Timings short enough for tests; the protocol's defaults are in lib/bootstrap.ts. */
export const TEST_TIMINGS: NonNullable<BootstrapSpec["timings"]> = {
  heartbeatSec: 2,
  selfTerminateCheckSec: 2,
  claimPollSec: 0.5,
  jobPollSec: 1,
};

export interface BootOptions {
  /** Names the table and temporary directory. */
  name: string;
  /** The InitialRunId tag. */
  runId: string;
  /** Subnet to launch the moto instance in (from resetMoto()). */
  subnetId: string;
  /** The token the fake runner accepts (default a fresh one). */
  token?: string;
  /** The token written in the table (default `token`). */
  tokenInTable?: string;
  preRunnerScript?: string;
  /** Overrides the package's real checksum for both architectures. */
  sha256?: string;
  runnerGroup?: string;
  githubUrl?: string;
  timings?: BootstrapSpec["timings"];
  /** AWS endpoint the script uses (default moto; e.g. a fault proxy in front of it). */
  awsEndpoint?: string;
  /** Runs the user data (default {@link runUserData}, on this machine; e.g. in a stock rootfs). */
  runUserData?: (options: UserDataOptions) => Promise<UserDataRun>;
  /** Whether the (stand-in) system has libicu at boot (default "present"). */
  libicu?: "present" | "missing";
  /** Run as under systemd, with a stand-in `systemctl` (default: the no-systemd fallback). */
  systemd?: boolean;
  /** The os-release the fake bin/installdependencies.sh reads (default the machine's). */
  osRelease?: string;
  jobUser?: BootstrapSpec["jobUser"];
  jobSudo?: BootstrapSpec["jobSudo"];
  jobMetadata?: BootstrapSpec["jobMetadata"];
  /**
   * The fake runner's timings, in seconds (default: config.sh 0.5, no listener delay, no cold
   * start): `config` for config.sh's talk with GitHub, `listen` from the listener's start to
   * "Listening for Jobs", `coldStart` added to the machine's first .NET process.
   */
  runnerTimings?: { config?: number; listen?: number; coldStart?: number };
}

export interface BootstrapInstance extends AsyncDisposable {
  instanceId: string;
  /** The user the runner and its jobs run as. */
  runnerUser: string;
  table: string;
  token: string;
  script: string;
  dir: string;
  /** When bash was started (ms since the epoch). */
  startedAt: number;
  plane: ControlPlane;
  imds: FakeImds;
  runnerPackage: FakeRunnerPackage;
  ec2: EC2Client;
  /** The bootstrap's log so far. */
  log(): Promise<string>;
  /** What the fake runner recorded on the GitHub side. */
  github(): Promise<GithubSide>;
  /** The instance's state in moto. */
  ec2State(): Promise<string | undefined>;
  /** Resolves with bash's exit code when the script exits. */
  exited: Promise<number>;
  /** SIGKILLs every process of this instance; resolves when none is left. */
  kill(): Promise<void>;
  /** Packages the stand-in apt-get/dnf "installed", one command line each. */
  installed(): Promise<string[]>;
  /** The stand-in systemctl's calls, one line of arguments each. */
  systemctl(): Promise<string[]>;
  /** How many times the script powered the machine off. */
  poweroffs(): Promise<number>;
  /** CPU seconds used so far by the instance's processes (see {@link UserDataRun.cpuSeconds}). */
  cpuSeconds(): Promise<number>;
}

export async function bootInstance(options: BootOptions): Promise<BootstrapInstance> {
  const token = options.token ?? `AAAA${crypto.randomUUID().replaceAll("-", "").toUpperCase()}`;
  const dir = await Deno.makeTempDir({ prefix: `bootstrap-${options.name}-` });
  const table = `bootstrap-${options.name}-${crypto.randomUUID().slice(0, 8)}`;
  const ec2 = new EC2Client({ endpoint: MOTO_URL, region: REGION, credentials: CREDENTIALS });
  const ddbClient = new DynamoDBClient({
    endpoint: MOTO_URL,
    region: REGION,
    credentials: CREDENTIALS,
  });
  const ddb = DynamoDBDocumentClient.from(ddbClient);

  await ddbClient.send(
    new CreateTableCommand(tableDefinition(table)),
  );
  const tags = { AllowSelfTermination: "true", InitialRunId: options.runId };
  const { Instances } = await ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      InstanceType: "t3.micro",
      SubnetId: options.subnetId,
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
      }],
    }),
  );
  const instanceId = Instances![0].InstanceId!;
  const imds = startFakeImds({ instanceId, region: REGION, tags });
  const githubDir = join(dir, "github");
  const runnerPackage = await startFakeRunnerPackage({ workDir: dir, githubDir, token });
  for (
    const [file, seconds] of [
      ["config-delay", options.runnerTimings?.config],
      ["listen-delay", options.runnerTimings?.listen],
      ["cold-start", options.runnerTimings?.coldStart],
    ] as const
  ) {
    if (seconds !== undefined) await Deno.writeTextFile(join(githubDir, file), `${seconds}\n`);
  }
  const plane = new ControlPlane({ ddb, table });
  await plane.putRegistrationToken(options.tokenInTable ?? token);

  const spec: BootstrapSpec = {
    table,
    region: REGION,
    githubUrl: options.githubUrl ?? "https://github.com/acme/widgets",
    runner: {
      version: "2.323.0",
      sha256: {
        x64: options.sha256 ?? runnerPackage.sha256,
        arm64: options.sha256 ?? runnerPackage.sha256,
      },
      downloadUrl: runnerPackage.downloadUrl,
    },
    timings: options.timings ?? TEST_TIMINGS,
    poolLabel: poolRunnerLabel(REGION, table),
  };
  if (options.jobUser !== undefined) spec.jobUser = options.jobUser;
  if (options.jobSudo !== undefined) spec.jobSudo = options.jobSudo;
  if (options.jobMetadata !== undefined) spec.jobMetadata = options.jobMetadata;
  if (options.runnerGroup !== undefined) spec.runnerGroup = options.runnerGroup;
  if (options.preRunnerScript !== undefined) spec.preRunnerScript = options.preRunnerScript;
  const script = bootstrapScript(spec);
  const run = await (options.runUserData ?? runUserData)({
    dir,
    script,
    imdsUrl: imds.url,
    awsEndpoint: options.awsEndpoint ?? MOTO_URL,
    libicu: options.libicu,
    systemd: options.systemd,
    osRelease: options.osRelease,
    instanceId,
  });
  const { startedAt, exited, kill } = run;
  const dispose = async () => {
    await kill();
    await imds.close();
    await runnerPackage.close();
    ec2.destroy();
    ddbClient.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    instanceId,
    runnerUser: TEST_RUNNER_USER,
    table,
    token,
    script,
    dir,
    startedAt,
    plane,
    imds,
    runnerPackage,
    ec2,
    log: run.log,
    github: () => readGithubSide(githubDir),
    ec2State: async () => {
      const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
      return out.Reservations?.[0]?.Instances?.[0]?.State?.Name;
    },
    exited,
    kill,
    installed: run.installed,
    cpuSeconds: run.cpuSeconds,
    systemctl: run.systemctl,
    poweroffs: run.poweroffs,
    [Symbol.asyncDispose]: dispose,
  };
}

/** What a user data run is given (`dir`: the harness directory, the fake GitHub side in it). */
export type UserDataOptions = Parameters<typeof runUserData>[0];

/** A user data script running under the harness (see {@link runUserData}). */
/**
 * The runner user harness instances run jobs as, created on this machine by the bootstrap when
 * missing and kept (the tests run as root). Instances running side by side share it: the
 * bootstrap's kill of its runner user's processes reaches, in tests, only those carrying its own
 * REFRESH_TEST_MARKER.
 */
export const TEST_RUNNER_USER = "refresh-test-runner";

export interface UserDataRun {
  /** When bash was started (ms since the epoch). */
  startedAt: number;
  /** Resolves with bash's exit code when the script exits. */
  exited: Promise<number>;
  /** The script's log so far. */
  log(): Promise<string>;
  /** SIGKILLs every process the script started; resolves when none is left. */
  kill(): Promise<void>;
  /** Packages the stand-in apt-get/dnf "installed", one command line each. */
  installed(): Promise<string[]>;
  /** The stand-in systemctl's calls, one line of arguments each. */
  systemctl(): Promise<string[]>;
  /** How many times the script powered the machine off (the stand-in poweroff's calls). */
  poweroffs(): Promise<number>;
  /**
   * CPU seconds (user + system) used so far by the script's live processes and every child
   * they reaped (utime, stime, cutime and cstime of /proc/<pid>/stat): the difference between
   * two calls is what the instance's process tree used in between.
   */
  cpuSeconds(): Promise<number>;
}

/**
 * Runs a user data script with bash in `dir` as cloud-init would run it on an instance, changed
 * only by the harness' environment: REFRESH_BOOTSTRAP_DIR, REFRESH_LOG_FILE and
 * REFRESH_IMDS_ENDPOINT point into the harness, the pinned AWS CLI is on PATH and calls
 * `awsEndpoint` (moto, or a proxy in front of it) with test credentials. Every process it starts
 * carries a marker in its environment, so {@link UserDataRun.kill} finds them all.
 */
export async function runUserData(options: {
  dir: string;
  script: string;
  imdsUrl: string;
  awsEndpoint: string;
  libicu?: "present" | "missing";
  systemd?: boolean;
  osRelease?: string;
  /** The instance moto terminates when the script powers off (EC2's shutdown behaviour). */
  instanceId?: string;
}): Promise<UserDataRun> {
  const { dir } = options;
  // The runner user must reach its install directory under `dir`.
  await Deno.chmod(dir, 0o755);
  await allowTraversal(dir);
  const shims = await writeShims(
    join(dir, "shims"),
    options.libicu ?? "present",
    options.instanceId,
  );
  // The system files the bootstrap reads and writes (REFRESH_SYSTEM_ROOT): os-release (the
  // machine's, or the one asked for), and room for apt's configuration, cron's and at's lists.
  const systemRoot = join(dir, "system");
  await Deno.mkdir(join(systemRoot, "etc"), { recursive: true });
  await Deno.writeTextFile(
    join(systemRoot, "etc", "os-release"),
    options.osRelease ?? await Deno.readTextFile("/etc/os-release"),
  );
  const scriptPath = join(dir, "user-data.sh");
  await Deno.writeTextFile(scriptPath, options.script);
  const marker = `refresh-test-${crypto.randomUUID()}`;
  const logFile = join(dir, "bootstrap.log");
  const env: Record<string, string> = {
    PATH: `${shims}:${TOOLS_PATH}`,
    HOME: dir,
    LANG: "C.UTF-8",
    AWS_ENDPOINT_URL: options.awsEndpoint,
    REFRESH_IMDS_ENDPOINT: options.imdsUrl,
    REFRESH_BOOTSTRAP_DIR: join(dir, "boot"),
    REFRESH_LOG_FILE: logFile,
    // No systemd in the harness, or a stand-in systemctl that starts the unit's ExecStart.
    REFRESH_SYSTEMD: options.systemd ? "on" : "off",
    REFRESH_SYSTEMD_UNIT_DIR: join(dir, "systemd"),
    REFRESH_RUNNER_USER: TEST_RUNNER_USER,
    REFRESH_SUDOERS_FILE: join(dir, "sudoers.d", "90-refresh-runner"),
    REFRESH_SYSTEM_ROOT: systemRoot,
    REFRESH_TEST_MARKER: marker,
  };
  const startedAt = Date.now();
  // setsid: the script leads a process group of its own, as user data does under cloud-init.
  const child = new Deno.Command("setsid", {
    args: ["bash", scriptPath],
    cwd: dir,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const exited = child.status.then((s) => s.code);
  const kill = async () => {
    for (let round = 0; round < 50; round++) {
      const pids = await markedPids(marker);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await exited;
    await removeMetadataBlocks(new URL(options.imdsUrl).port);
  };
  return {
    startedAt,
    exited,
    log: async () => await Deno.readTextFile(logFile).catch(() => ""),
    kill,
    cpuSeconds: () => cpuSeconds(marker),
    systemctl: async () =>
      (await Deno.readTextFile(join(shims, "systemctl.log")).catch(() => "")).split("\n")
        .filter((line) => line !== ""),
    poweroffs: async () =>
      (await Deno.readTextFile(join(shims, "poweroff.log")).catch(() => "")).split("\n")
        .filter((line) => line !== "").length,
    installed: async () =>
      (await Deno.readTextFile(join(shims, "installed")).catch(() => "")).split("\n")
        .filter((line) => line !== ""),
  };
}

/**
 * Stand-ins for `ldconfig` (lists a libicu once "installed", as `ldconfig -NXv` does, else only
 * libc), `apt-get` and `dnf` (record their arguments in `installed`; installing a libicu package
 * makes ldconfig list it). Returns their directory.
 */
async function writeShims(
  shims: string,
  libicu: "present" | "missing",
  instanceId: string | undefined,
): Promise<string> {
  await Deno.mkdir(shims, { recursive: true, mode: 0o755 });
  await Deno.chmod(shims, 0o755);
  if (libicu === "present") await Deno.writeTextFile(join(shims, "libicu"), "");
  const ldconfig = `#!/bin/bash
# Stand-in ldconfig (test/support/bootstrap_instance.ts).
printf '/lib/x86_64-linux-gnu: (from /etc/ld.so.conf.d/x86_64-linux-gnu.conf:3)\\n\\tlibc.so.6 -> libc.so.6\\n'
if [[ -e '${shims}/libicu' ]]; then printf '\\tlibicuuc.so.72 -> libicuuc.so.72.1\\n'; fi
`;
  const installer = (name: string) =>
    `#!/bin/bash
# Stand-in ${name} (test/support/bootstrap_instance.ts): records, installs nothing.
echo "${name} $*" >>'${shims}/installed'
if [[ " $* " == *" libicu"* ]]; then touch '${shims}/libicu'; fi
`;
  await Deno.writeTextFile(join(shims, "ldconfig"), ldconfig, { mode: 0o755 });
  await Deno.writeTextFile(join(shims, "apt-get"), installer("apt-get"), { mode: 0o755 });
  await Deno.writeTextFile(join(shims, "dnf"), installer("dnf"), { mode: 0o755 });
  // systemctl: records its arguments; `start --no-block <unit>` runs the unit's ExecStart with
  // only its EnvironmentFile's variables, in a session of its own, as systemd would.
  const systemctl = `#!/bin/bash
# Stand-in systemctl (test/support/bootstrap_instance.ts).
echo "$*" >>'${shims}/systemctl.log'
if [[ $1 == poweroff ]]; then exec '${shims}/poweroff'; fi
if [[ $1 == start ]]; then
  unit="$REFRESH_SYSTEMD_UNIT_DIR/\${@: -1}"
  env_file=$(sed -n 's/^EnvironmentFile=//p' "$unit")
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  mapfile -t environment <"$env_file"
  # ExecStart is split into words, as systemd does.
  env -i "\${environment[@]}" setsid $exec_start </dev/null >/dev/null 2>&1 &
fi
`;
  await Deno.writeTextFile(join(shims, "systemctl"), systemctl, { mode: 0o755 });
  // poweroff: records it and, as EC2 does for an instance whose shutdown behaviour is terminate,
  // terminates the instance in moto.
  const poweroff = `#!/bin/bash
# Stand-in poweroff (test/support/bootstrap_instance.ts).
echo poweroff >>'${shims}/poweroff.log'
${
    instanceId === undefined ? "" : `curl -sS --max-time 10 -o /dev/null '${MOTO_URL}/' ` +
      // moto routes by the credential scope's service and checks no signature.
      `-H 'Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, ` +
      `SignedHeaders=host, Signature=0' ` +
      `-d 'Action=TerminateInstances&Version=2016-11-15&InstanceId.1=${instanceId}'`
  }
`;
  await Deno.writeTextFile(join(shims, "poweroff"), poweroff, { mode: 0o755 });
  return shims;
}

/**
 * Removes the packet-filter rules a bootstrap added to close the metadata server on `port` to
 * the runner user (`iptables -S OUTPUT` lines with that port and an owner match).
 */
export async function removeMetadataBlocks(port: string): Promise<string[]> {
  const removed: string[] = [];
  const listed = await new Deno.Command("iptables", {
    args: ["-w", "10", "-S", "OUTPUT"],
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  if (!listed?.success) return removed;
  for (const line of new TextDecoder().decode(listed.stdout).split("\n")) {
    if (!line.startsWith("-A OUTPUT ") || !line.includes(`--dport ${port} `)) continue;
    if (!line.includes("--uid-owner")) continue;
    const args = line.replace(/^-A /, "-D ").split(" ");
    const { success } = await new Deno.Command("iptables", {
      args: ["-w", "10", ...args],
      stderr: "null",
    }).output();
    if (success) removed.push(line);
  }
  return removed;
}

async function cpuSeconds(marker: string): Promise<number> {
  const pids = await markedPids(marker);
  const { stdout } = await new Deno.Command("bash", {
    args: [
      "-c",
      'for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null; done; getconf CLK_TCK',
      "-",
      ...pids.map(String),
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  return statCpuSeconds(new TextDecoder().decode(stdout));
}

/**
 * Processes whose environment carries `marker`. (Deno reads /proc only with --allow-all, so grep
 * reads it; the marker is no secret.)
 */
async function markedPids(marker: string): Promise<number[]> {
  const { stdout } = await new Deno.Command("bash", {
    args: [
      "-c",
      'grep -lszF -- "$1" /proc/[0-9]*/environ || true',
      "-",
      `REFRESH_TEST_MARKER=${marker}`,
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(stdout).split("\n").flatMap((line) => {
    const match = line.match(/^\/proc\/(\d+)\/environ$/);
    return match && Number(match[1]) !== Deno.pid ? [Number(match[1])] : [];
  });
}

/**
 * Samples every process's command line (`ps -eww -o args=`, which shows /proc/<pid>/cmdline)
 * until stopped, keeping those that contain any of `secrets`. The secrets stay in this process.
 */
export function watchCommandLines(secrets: () => string[], periodMs = 100): {
  hits: string[];
  samples: number;
  stop(): Promise<void>;
} {
  const state = { hits: [] as string[], samples: 0, stopped: false };
  const loop = (async () => {
    while (!state.stopped) {
      const wanted = secrets();
      const { stdout } = await new Deno.Command("ps", {
        args: ["-eww", "-o", "args="],
        stdout: "piped",
        stderr: "null",
      }).output();
      for (const cmdline of new TextDecoder().decode(stdout).split("\n")) {
        if (wanted.some((s) => cmdline.includes(s))) state.hits.push(cmdline);
      }
      state.samples++;
      await new Promise((resolve) => setTimeout(resolve, periodMs));
    }
  })();
  return {
    get hits() {
      return state.hits;
    },
    get samples() {
      return state.samples;
    },
    stop: async () => {
      state.stopped = true;
      await loop;
    },
  };
}
