/**
 * Runs user data in a stock userland instead of on this machine: the Debian root filesystem
 * test/support/stock_rootfs.sh builds with mmdebstrap from Debian's own packages (what a stock
 * cloud image has; no AWS CLI, no libicu; an offline apt repository with what the runner's
 * installdependencies.sh installs). test/support/tools.sh builds it when started with
 * `--stock-rootfs` and exports its directory as REFRESH_STOCK_ROOTFS; see {@link stockRootfs}.
 *
 * Each run gets its own instance of the rootfs, entered as an instance boots, as root:
 * `unshare --mount --pid --net --fork` makes mount, process and network namespaces. The network
 * is the instance's own (loopback only), so what the bootstrap does to it (its firewall rule
 * keeping jobs from instance metadata) stays there; the harness' services on this machine's
 * 127.0.0.1 (moto, the fake metadata server, the fake runner package: every 127.0.0.1 port named
 * in the user data or its environment) are carried in on the same ports by
 * test/support/loopback_relay.ts, and nothing else is reachable. An overlay mount puts a writable
 * layer on the cached rootfs (which stays unchanged), with a fresh /proc, a read-only /sys, the
 * machine's /dev, and empty tmpfs /run and /tmp (so systemd is installed but not running, as in a
 * container: the bootstrap's no-systemd path runs). The harness directory is bind-mounted at its
 * own path (the fake runner package's GitHub side lives there) and opened to every user (the
 * runner runs as a non-root user). The user data goes where cloud-init puts it
 * (/var/lib/cloud/instance/scripts/part-001) and runs with bash under `chroot`, in its own session,
 * with cloud-init's bare environment: a PATH without the harness' tools, no HOME, plus only the
 * documented emulator overrides (REFRESH_IMDS_ENDPOINT, AWS_ENDPOINT_URL). The bootstrap keeps its
 * own directories (/opt/refresh, /var/log/refresh-bootstrap.log). The namespaces' first
 * process stays after the script exits and reaps orphans, as init does; killing it ends every
 * process of the instance, and the namespaces with their mounts and rules go with them.
 *
 *     const rootfs = stockRootfs();
 *     const stock = stockUserland(rootfs);
 *     await using instance = await bootInstance({ ..., runUserData: stock.runUserData });
 *     await stock.last!.exec(["dpkg-query", "-W", "libicu*"]);
 */
import { join } from "node:path";
import type { UserDataOptions, UserDataRun } from "./bootstrap_instance.ts";
import { loopbackPorts, relayArgs } from "./loopback_relay.ts";
import { statCpuSeconds } from "./proc_stat.ts";

/** Where cloud-init puts a user data script before running it. */
export const USER_DATA_PATH = "/var/lib/cloud/instance/scripts/part-001";
/** The generated bootstrap's log file on an instance (lib/bootstrap.ts's default). */
export const BOOTSTRAP_LOG = "/var/log/refresh-bootstrap.log";
/** cloud-init runs user data with this PATH (and no HOME). */
const INSTANCE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The stock rootfs directory built by `sh test/support/tools.sh --stock-rootfs ...`
 * (REFRESH_STOCK_ROOTFS). Throws, saying how to build it, when it is not there: the test itself
 * never downloads anything.
 */
export function stockRootfs(): string {
  const dir = Deno.env.get("REFRESH_STOCK_ROOTFS");
  const hint = "run the stock-userland test with `deno task test:stock` (it builds the rootfs " +
    "with test/support/stock_rootfs.sh, as root, from Debian's package archive)";
  if (!dir) throw new Error(`REFRESH_STOCK_ROOTFS is not set: ${hint}`);
  try {
    if (!Deno.statSync(join(dir, "etc/os-release")).isFile) throw new Error("not a file");
  } catch (error) {
    throw new Error(`REFRESH_STOCK_ROOTFS=${dir} holds no root filesystem (${error}): ${hint}`);
  }
  return dir;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A user data script running in an instance of the stock rootfs. */
export interface RootfsRun extends UserDataRun {
  /**
   * Runs `args` inside the instance (its namespaces and root), as root with the instance's PATH;
   * only while the instance is alive.
   */
  exec(args: string[]): Promise<ExecResult>;
  /** A file of the instance's filesystem, "" when missing (also after the instance was killed). */
  readFile(path: string): Promise<string>;
  /** What apt installed on the instance: the command lines of apt's history, in order. */
  installed(): Promise<string[]>;
  /** Stand-in systemctl calls: none (the image's systemctl is there; systemd is not running). */
  systemctl(): Promise<string[]>;
  /**
   * CPU seconds (user + system) used so far by the instance's live processes and every child they
   * reaped (utime, stime, cutime, cstime of /proc/<pid>/stat), the namespaces' first process and
   * the relay left out: the difference between two calls is what the instance used in between.
   */
  cpuSeconds(): Promise<number>;
}

/**
 * A user data runner for `bootInstance({ runUserData })` that runs the script in a fresh instance
 * of `rootfs` (see the module doc); `last` is the latest run, for its {@link RootfsRun.exec}.
 */
export function stockUserland(rootfs: string): {
  runUserData(options: UserDataOptions): Promise<RootfsRun>;
  readonly last: RootfsRun | undefined;
} {
  let last: RootfsRun | undefined;
  return {
    runUserData: async (options) => {
      last = await runInRootfs(rootfs, options);
      return last;
    },
    get last() {
      return last;
    },
  };
}

/**
 * The namespaces' first process (bash, on this machine's filesystem): prints its pid as this
 * machine sees it, builds the instance's filesystem, brings up its loopback and the relay's inside
 * half, runs the user data under chroot with the given environment, prints its exit status,
 * then stays (reaping orphans) until killed. Arguments: rootfs, layer directory, harness
 * directory, the number N of words of the inside relay's command, those N words, then the
 * environment (NAME=value...).
 */
const ENTER = `set -eu
lower=$1 layer=$2 harness=$3 words=$4
shift 4
relay=("\${@:1:words}")
shift "$words"
read -r pid _ </proc/self/stat # this machine's /proc, not yet the instance's: the outer pid
echo "pid $pid"
root=$layer/root
mkdir -p "$layer/upper" "$layer/work" "$root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$layer/upper,workdir=$layer/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root$harness"
mount --bind "$harness" "$root$harness"
# The instance's network: its loopback (brought up with the image's own ip), and the relay.
chroot "$root" ip link set lo up
"\${relay[@]}" >"$layer/relay.log" 2>&1 &
for _ in $(seq 300); do
  grep -qsx ready "$layer/relay.log" && break
  sleep 0.1
done
if ! grep -qsx ready "$layer/relay.log"; then
  echo "the relay did not start: $(cat "$layer/relay.log")" >&2
  exit 1
fi
set +e
chroot "$root" /usr/bin/env -i "$@" setsid bash ${USER_DATA_PATH} \\
  </dev/null >"$layer/console.log" 2>&1 &
wait $!
echo "exited $?"
# As init: bash reaps every child that ends, its own or reparented ones.
while :; do
  sleep 1 &
  wait $!
done
`;

async function runInRootfs(rootfs: string, options: UserDataOptions): Promise<RootfsRun> {
  const layer = await Deno.makeTempDir({ prefix: "stock-rootfs-" });
  // Undone in reverse order on kill, or at once when the instance cannot start.
  const cleanups = [() => Deno.remove(layer, { recursive: true }).catch(() => {})];
  const cleanUp = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    return await startInRootfs(rootfs, options, layer, cleanups, cleanUp);
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

async function startInRootfs(
  rootfs: string,
  options: UserDataOptions,
  layer: string,
  cleanups: (() => Promise<void>)[],
  cleanUp: () => Promise<void>,
): Promise<RootfsRun> {
  const { dir } = options;
  // The user data where cloud-init writes it, in the instance's writable layer.
  const scriptFile = join(layer, "upper", USER_DATA_PATH);
  await Deno.mkdir(join(scriptFile, ".."), { recursive: true });
  await Deno.writeTextFile(scriptFile, options.script, { mode: 0o700 });
  // The harness directory's GitHub side is written by the runner's scripts, as root (config.sh
  // as installdependencies.sh does) and as the runner user: its files are open to every user.
  await Deno.chmod(dir, 0o755);
  await Deno.writeTextFile(join(dir, "github", "events"), "", { append: true });
  const opened = await command("chmod", ["-R", "a+rwX", join(dir, "github")]);
  if (opened.code !== 0) throw new Error(`chmod -R a+rwX ${dir}/github: ${opened.stderr}`);

  const env = {
    PATH: INSTANCE_PATH,
    AWS_ENDPOINT_URL: options.awsEndpoint,
    REFRESH_IMDS_ENDPOINT: options.imdsUrl,
  };
  const ports = loopbackPorts(options.script, ...Object.values(env));
  const sockets = join(layer, "net");
  await Deno.mkdir(sockets);
  const outside = await startRelay(sockets, ports);
  cleanups.push(outside.stop);
  const inside = [Deno.execPath(), ...relayArgs("inside", sockets, ports)];
  const startedAt = Date.now();
  const child = new Deno.Command("unshare", {
    args: [
      "--mount",
      "--pid",
      "--net",
      "--fork",
      "--kill-child=SIGKILL",
      "--propagation",
      "private",
      "bash",
      "-c",
      ENTER,
      "enter",
      rootfs,
      layer,
      dir,
      String(inside.length),
      ...inside,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    ],
    clearEnv: true,
    env: { PATH: INSTANCE_PATH, DENO_DIR: join(layer, "deno") },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  cleanups.push(async () => {
    try {
      child.kill("SIGKILL"); // --kill-child: its first process gets SIGKILL, then all the rest
    } catch {
      // already gone
    }
    await child.status;
  });

  // The first process reports its pid, then the script's exit status.
  const initPid = Promise.withResolvers<number>();
  const exitStatus = Promise.withResolvers<number>();
  const stderr = new Response(child.stderr).text();
  let endedWith = "";
  const ended = child.status.then(async (status) => {
    const text = await stderr;
    endedWith = `the instance ended (exit status ${status.code}): ${text}`;
    return { code: status.code, stderr: text };
  });
  (async () => {
    let buffer = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const [word, value] = buffer.slice(0, newline).split(" ");
        buffer = buffer.slice(newline + 1);
        if (word === "pid") initPid.resolve(Number(value));
        if (word === "exited") exitStatus.resolve(Number(value));
      }
    }
  })().catch(() => {}); // ends with the instance; its end is `ended`
  const pid = await Promise.race([
    initPid.promise,
    ended.then(({ code, stderr }) => {
      throw new Error(`unshare exited with ${code} before entering the rootfs: ${stderr}`);
    }),
  ]);
  // The script's status; if the instance ends first (killed, or its setup failed), -1.
  const exited = Promise.race([exitStatus.promise, ended.then(() => -1)]);

  let killed: Promise<void> | undefined;
  const kill = () => killed ??= cleanUp();

  // The writable layer's copy if there is one (a whiteout there: deleted), else the rootfs's.
  const readFile = async (path: string) => {
    const upper = join(layer, "upper", path);
    const inUpper = await Deno.lstat(upper).then((info) => info, () => undefined);
    if (inUpper) return inUpper.isFile ? await Deno.readTextFile(upper) : "";
    return await Deno.readTextFile(join(rootfs, path)).catch(() => "");
  };
  return {
    startedAt,
    exited,
    kill,
    readFile,
    log: async () => {
      const console = await Deno.readTextFile(join(layer, "console.log")).catch(() => "");
      const file = await readFile(BOOTSTRAP_LOG);
      return `--- console ---\n${console}\n--- ${BOOTSTRAP_LOG} ---\n${file}\n${endedWith}`;
    },
    installed: async () =>
      [...(await readFile("/var/log/apt/history.log")).matchAll(/^Commandline: (.*)$/gm)]
        .map((m) => m[1]),
    systemctl: () => Promise.resolve([]),
    // The image's own poweroff (systemd's) finds no systemd running and fails: the log counts.
    poweroffs: async () => (await readFile(BOOTSTRAP_LOG)).match(/ powering off \(/g)?.length ?? 0,
    cpuSeconds: () => cpuSeconds(pid),
    exec: async (args) => {
      // Entering the pid namespace forks; the instance's root is the overlay in its mounts.
      return await command("nsenter", [
        `--target=${pid}`,
        "--mount",
        "--pid",
        "--net",
        "--",
        "chroot",
        join(layer, "root"),
        "/usr/bin/env",
        "-i",
        `PATH=${INSTANCE_PATH}`,
        ...args,
      ]);
    },
  };
}

/** Starts the relay's outside half (see test/support/loopback_relay.ts); resolves once ready. */
async function startRelay(socketDir: string, ports: number[]): Promise<{ stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: relayArgs("outside", socketDir, ports),
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let said = "";
  while (!said.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`the loopback relay exited with ${(await child.status).code}: ${said}`);
    }
    said += value;
  }
  await reader.cancel();
  return {
    stop: async () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
    },
  };
}

/**
 * What {@link RootfsRun.cpuSeconds} says for the instance whose first process is `init` (its pid
 * on this machine): every process in init's pid namespace but init and the relay.
 */
async function cpuSeconds(init: number): Promise<number> {
  const { stdout } = await command("bash", [
    "-c",
    `ns=$(readlink "/proc/$1/ns/pid") || exit 1
    for dir in /proc/[0-9]*; do
      [[ \${dir#/proc/} != "$1" && $(readlink "$dir/ns/pid" 2>/dev/null) == "$ns" ]] || continue
      grep -qF loopback_relay.ts "$dir/cmdline" 2>/dev/null && continue
      cat "$dir/stat" 2>/dev/null
    done
    getconf CLK_TCK`,
    "-",
    String(init),
  ]);
  return statCpuSeconds(stdout);
}

async function command(name: string, args: string[]): Promise<ExecResult> {
  const out = await new Deno.Command(name, { args, stdout: "piped", stderr: "piped" }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}
