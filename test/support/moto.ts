/**
 * The AWS emulator for tests: one moto server per test process, started on a free port on
 * 127.0.0.1 when this module is first imported, reset before each test with {@link resetMoto},
 * and stopped when the process ends (it also exits by itself when its stdin closes). A test that
 * needs a moto of its own (other built-in images, say) starts one with {@link startMoto}.
 *
 * moto's Python comes from REFRESH_MOTO_PYTHON (set by test/support/tools.sh), else
 * .tools/venv/bin/python, else python3.
 */
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  CreateSecurityGroupCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  EC2Client,
} from "npm:@aws-sdk/client-ec2@3.1169.0";

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

/**
 * The network a reset makes in the emptied account: a VPC with two subnets (us-east-1a and
 * us-east-1b) and a security group for runners. Its ids are whatever moto generated; tests take
 * them from the reset and never name ids of their own.
 */
export interface Network {
  vpcId: string;
  subnetIds: readonly string[];
  securityGroupId: string;
}

export interface Moto extends AsyncDisposable {
  url: string;
  /**
   * Forgets every resource, so a test starts from an empty account, then makes the test
   * {@link Network} and returns its ids.
   */
  reset(): Promise<Network>;
  /**
   * Makes the test {@link Network} in the account as it is: on a server just started, which is
   * empty, instead of a reset. (moto 5.2.1 cannot reset a server started with MOTO_AMIS_PATH: it
   * parses the images' creation dates a second time and answers 500.)
   */
  makeNetwork(): Promise<Network>;
  /** Stops the server and waits for it to exit. */
  stop(): Promise<void>;
  /** Kills the server at once (when the test process unloads). */
  kill(): void;
}

/** Starts a moto server (`env` adds to its environment, e.g. MOTO_AMIS_PATH). */
export async function startMoto(env: Record<string, string> = {}): Promise<Moto> {
  const process = new Deno.Command(python(), {
    args: [fromFileUrl(new URL("./moto_server.py", import.meta.url))],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
    env: { MOTO_ENABLE_AMI_VALIDATION: "true", ...env },
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
  const url = `http://127.0.0.1:${Number(text.trim())}`;
  const stop = async () => {
    await process.stdin.close();
    await process.status;
  };
  return {
    url,
    reset: () => reset(url),
    makeNetwork: () => makeNetwork(url),
    stop,
    kill: () => process.kill("SIGKILL"),
    [Symbol.asyncDispose]: stop,
  };
}

async function post(url: string, path: string): Promise<void> {
  const response = await fetch(`${url}${path}`, { method: "POST" });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`moto ${path} failed: ${response.status}`);
}

async function reset(url: string): Promise<Network> {
  await post(url, "/moto-api/reset");
  return await makeNetwork(url);
}

async function makeNetwork(url: string): Promise<Network> {
  const ec2 = new EC2Client({
    endpoint: url,
    region: "us-east-1",
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
  });
  try {
    const { Vpc } = await ec2.send(new CreateVpcCommand({ CidrBlock: "10.20.0.0/16" }));
    const subnetIds = [];
    for (const [i, zone] of ["us-east-1a", "us-east-1b"].entries()) {
      const { Subnet } = await ec2.send(
        new CreateSubnetCommand({
          VpcId: Vpc!.VpcId,
          CidrBlock: `10.20.${i + 1}.0/24`,
          AvailabilityZone: zone,
        }),
      );
      subnetIds.push(Subnet!.SubnetId);
    }
    const { GroupId } = await ec2.send(
      new CreateSecurityGroupCommand({
        VpcId: Vpc!.VpcId,
        GroupName: "runners",
        Description: "runners",
      }),
    );
    return { vpcId: Vpc!.VpcId!, subnetIds: subnetIds as string[], securityGroupId: GroupId! };
  } finally {
    ec2.destroy();
  }
}

const server = await startMoto();
globalThis.addEventListener("unload", () => {
  try {
    server.kill();
  } catch {
    // already gone
  }
});

/** Base URL of the running moto server. */
export const MOTO_URL: string = server.url;

/** Resets the shared moto server: an empty account with a new test {@link Network}, returned. */
export function resetMoto(): Promise<Network> {
  return server.reset();
}

/** Environment for a refresh process (or SDK) pointed at moto with dummy credentials. */
export const AWS_ENV: Record<string, string> = {
  AWS_ENDPOINT_URL: MOTO_URL,
  AWS_ACCESS_KEY_ID: "testing",
  AWS_SECRET_ACCESS_KEY: "testing",
  AWS_REGION: "us-east-1",
  AWS_EC2_METADATA_DISABLED: "true",
};
