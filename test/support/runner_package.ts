/**
 * A fake GitHub Actions runner package for running the generated bootstrap: a tar.gz with
 * `config.sh`, `run.sh`, `bin/Runner.Listener` and `bin/installdependencies.sh` scripts, served
 * over HTTP on 127.0.0.1 at the download URL template the bootstrap is given, with its SHA-256
 * computed here.
 *
 * The scripts act like the real ones where the bootstrap depends on it, against a directory that
 * stands for GitHub's side of one instance (`github/`):
 * - `config.sh [--unattended --url U --name N --labels L --no-default-labels --disableupdate
 *   [--runnergroup G]]` registers runner N (`github/runners/N`, and `.runner` in the install
 *   directory), refusing when already configured; `config.sh remove` removes it. Both take the
 *   token only from `ACTIONS_RUNNER_INPUT_TOKEN`, as the real runner can, fail for a token other
 *   than the one the package was made for (compared by SHA-256), and, as the real
 *   `src/Misc/layoutroot/config.sh` does, refuse root without RUNNER_ALLOW_RUNASROOT ("Must not
 *   run with sudo") and exit with "Libicu's dependencies is missing for Dotnet Core 6.0" when
 *   `ldconfig -NXv` lists no libicu. `config.sh remove` accepts only the real options (`--token`,
 *   `--pat`, `--local`). Every call is recorded in `github/calls/<n>-<verb>`: a facts line
 *   (`token=valid|invalid|missing`), then its arguments, one per line.
 * - `bin/installdependencies.sh` does what the real one does: needs root, reads /etc/os-release
 *   and installs the .NET dependencies (libicu among them) with apt-get on Debian/Ubuntu or dnf on
 *   Fedora/RHEL, else "Can't detect current OS type"; it appends `installdependencies` to
 *   `github/events`. (The harness puts harmless apt-get/dnf/ldconfig stand-ins on PATH.)
 * - `run.sh` needs a configured runner, records its environment (which jobs inherit) in
 *   `github/env-run-N`, and starts `bin/Runner.Listener`, which acts out a job: a child process
 *   that runs until stopped, its environment in `github/env-job-N`. Both append to
 *   `github/events` (`listening N <pid>`, `job N <pid>`, `stopped N`); SIGTERM stops them. Once
 *   connected the listener prints `<time>: Listening for Jobs`, as the real one does. While
 *   `github/refuse-listener` holds a number above 0, a listener start takes one off and exits 0
 *   before listening (as a runner GitHub refuses does); `github/listen-delay` (seconds) delays
 *   connecting. The job runs `github/job-step` (if it
 *   exists) first, recording its output in `github/job-step-N.out` and status in `.status`.
 */
import { dirname, join, resolve } from "node:path";

export interface FakeRunnerPackage extends AsyncDisposable {
  /** Download URL template for BootstrapSpec.runner.downloadUrl ({version} and {arch}). */
  downloadUrl: string;
  /** SHA-256 (hex) of the package, the same for both architectures. */
  sha256: string;
  /** Paths requested from the server. */
  requests: string[];
  close(): Promise<void>;
}

/** What the fake GitHub directory holds after a bootstrap ran. */
export interface GithubSide {
  /** Registered runners by name: their labels, URL and group. */
  runners: Record<string, { labels: string; url: string; group: string }>;
  /** config.sh calls in order. */
  calls: { verb: "config" | "remove"; token: string; args: string[] }[];
  events: string[];
}

/**
 * Builds the package in `workDir` for runners whose GitHub side is `githubDir` and whose valid
 * registration token is `token`, and serves it. `token: { sha256File }` is for a token not known
 * yet when the package is built (one refresh will get from GitHub): the scripts read the valid
 * token's SHA-256 (hex) from that file when they run, so the test writes it there once known.
 */
export async function startFakeRunnerPackage(options: {
  workDir: string;
  githubDir: string;
  token: string | { sha256File: string };
}): Promise<FakeRunnerPackage> {
  const { workDir, githubDir, token } = options;
  const tokenLine = typeof token === "string"
    ? `readonly TOKEN_SHA256='${await sha256Hex(new TextEncoder().encode(token))}'`
    : `TOKEN_SHA256=$(cat '${token.sha256File}' 2>/dev/null || echo none); readonly TOKEN_SHA256`;
  const layout = join(workDir, "package");
  await Deno.mkdir(join(layout, "bin"), { recursive: true });
  await Deno.mkdir(join(githubDir, "runners"), { recursive: true });
  await Deno.mkdir(join(githubDir, "calls"), { recursive: true });
  // The runner user (not root) writes GitHub's side.
  for (const path of [githubDir, join(githubDir, "runners"), join(githubDir, "calls")]) {
    await Deno.chmod(path, 0o777);
  }
  await allowTraversal(githubDir);
  const prelude = [
    "#!/bin/bash",
    "set -u",
    `readonly GITHUB_DIR='${githubDir}'`,
    tokenLine,
    'here=$(cd "$(dirname "$0")" && pwd)',
    "# seconds from github/NAME, else DEFAULT",
    'delay() { cat "$GITHUB_DIR/$1" 2>/dev/null || echo "$2"; }',
    "# The .NET runtime's cold start: the machine's first .NET process (Runner.Listener in any",
    "# mode) waits github/cold-start seconds more, as its files are first read from disk.",
    "dotnet_start() {",
    '  if [[ ! -e $GITHUB_DIR/runtime-warm ]]; then sleep "$(delay cold-start 0)"; : >"$GITHUB_DIR/runtime-warm"; fi',
    "}",
    "",
  ].join("\n");
  const files: [string, string][] = [
    ["config.sh", prelude + CONFIG_SH],
    ["run.sh", prelude + RUN_SH],
    ["bin/Runner.Listener", prelude + LISTENER_SH],
    ["bin/installdependencies.sh", prelude + INSTALLDEPENDENCIES_SH],
  ];
  for (const [name, text] of files) {
    await Deno.writeTextFile(join(layout, name), text, { mode: 0o755 });
  }
  const tarball = join(workDir, "runner.tar.gz");
  const tar = await new Deno.Command("tar", {
    args: ["-czf", tarball, "-C", layout, "."],
    stderr: "piped",
  }).output();
  if (!tar.success) throw new Error(`tar failed: ${new TextDecoder().decode(tar.stderr)}`);
  const bytes = await Deno.readFile(tarball);
  const sha256 = await sha256Hex(bytes);

  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    requests.push(path);
    if (/^\/v[\d.]+\/actions-runner-linux-(x64|arm64)-[\d.]+\.tar\.gz$/.test(path)) {
      return new Response(bytes, { headers: { "content-type": "application/gzip" } });
    }
    return new Response("not found", { status: 404 });
  });
  const close = async () => {
    await server.shutdown();
  };
  return {
    downloadUrl:
      `http://127.0.0.1:${server.addr.port}/v{version}/actions-runner-linux-{arch}-{version}.tar.gz`,
    sha256,
    requests,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Lets other users (the bootstrap's runner user) pass through the temporary directories above
 * `path` (adds o+x to each ancestor inside the system's temporary directory, such as the 0700
 * directories Deno.makeTempDir makes); nothing outside it is touched.
 */
export async function allowTraversal(path: string): Promise<void> {
  const tmp = resolve(Deno.env.get("TMPDIR") ?? "/tmp");
  for (let dir = dirname(resolve(path)); dir.startsWith(`${tmp}/`); dir = dirname(dir)) {
    const { mode } = await Deno.stat(dir);
    if (mode !== null && (mode & 0o001) === 0) await Deno.chmod(dir, (mode & 0o7777) | 0o001);
  }
}

/** Reads what the fake runner scripts recorded in `githubDir`. */
export async function readGithubSide(githubDir: string): Promise<GithubSide> {
  const runners: GithubSide["runners"] = {};
  for await (const entry of Deno.readDir(join(githubDir, "runners"))) {
    const fields = Object.fromEntries(
      (await Deno.readTextFile(join(githubDir, "runners", entry.name))).trim().split("\n")
        .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
    );
    runners[entry.name] = { labels: fields.labels, url: fields.url, group: fields.group };
  }
  const names: string[] = [];
  for await (const entry of Deno.readDir(join(githubDir, "calls"))) names.push(entry.name);
  names.sort((a, b) => parseInt(a) - parseInt(b));
  const calls: GithubSide["calls"] = [];
  for (const name of names) {
    const [facts, ...args] = (await Deno.readTextFile(join(githubDir, "calls", name)))
      .replace(/\n$/, "").split("\n");
    calls.push({
      verb: name.endsWith("-remove") ? "remove" : "config",
      token: facts.replace(/^token=/, ""),
      args,
    });
  }
  let events: string[] = [];
  try {
    events = (await Deno.readTextFile(join(githubDir, "events"))).trim().split("\n");
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return { runners, calls, events };
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const CONFIG_SH = `# Fake config.sh: see test/support/runner_package.ts.
verb=config
if [[ \${1:-} == remove ]]; then verb=remove; shift; fi
given=missing
if [[ -n \${ACTIONS_RUNNER_INPUT_TOKEN:-} ]]; then
  sum=$(printf '%s' "$ACTIONS_RUNNER_INPUT_TOKEN" | sha256sum)
  if [[ \${sum%% *} == "$TOKEN_SHA256" ]]; then given=valid; else given=invalid; fi
fi
n=$(find "$GITHUB_DIR/calls" -type f | wc -l)
{ printf 'token=%s\\n' "$given"; if (($# > 0)); then printf '%s\\n' "$@"; fi; } >"$GITHUB_DIR/calls/$((n + 1))-$verb"
if ((EUID == 0)) && [[ -z \${RUNNER_ALLOW_RUNASROOT:-} ]]; then
  echo "Must not run with sudo"
  exit 1
fi
# The real config.sh's libicu check.
if ! command -v ldconfig >/dev/null; then LDCONFIG_COMMAND=/sbin/ldconfig; else LDCONFIG_COMMAND=ldconfig; fi
libpath=\${LD_LIBRARY_PATH:-}
if ! $LDCONFIG_COMMAND -NXv \${libpath//:/ } 2>&1 | grep libicu >/dev/null 2>&1; then
  echo "Libicu's dependencies is missing for Dotnet Core 6.0"
  echo "Execute sudo ./bin/installdependencies.sh to install any missing Dotnet Core 6.0 dependencies."
  exit 1
fi
# The real config.sh sources env.sh, which writes .env and .path for the runner's jobs.
printf 'LANG=%s\\n' "\${LANG:-}" >"$here/.env"
printf '%s\\n' "$PATH" >"$here/.path"
# Then Runner.Listener configure: the runtime's start, then GitHub for seconds (config-delay).
dotnet_start
sleep "$(delay config-delay 0.5)"
if [[ $given != valid ]]; then
  echo "Http response code: NotFound from 'POST https://api.github.com/actions/runner-registration'" >&2
  exit 1
fi
if [[ $verb == remove ]]; then
  while (($# > 0)); do
    case $1 in
      --token | --pat) shift ;;
      --local) ;;
      *) echo "Unrecognized command-line input arguments for command remove: '$1'" >&2; exit 1 ;;
    esac
    shift
  done
  if [[ ! -e "$here/.runner" ]]; then echo "The runner is not configured." >&2; exit 1; fi
  name=$(sed -n 's/^name=//p' "$here/.runner")
  rm -f "$GITHUB_DIR/runners/$name" "$here/.runner"
  echo "Runner removed successfully"
  exit 0
fi
if [[ -e "$here/.runner" ]]; then
  echo "Cannot configure the runner because it is already configured." >&2
  exit 1
fi
name="" labels="" url="" group="Default" unattended="" replace=""
while (($# > 0)); do
  case $1 in
    --name) name=$2; shift ;;
    --labels) labels=$2; shift ;;
    --url) url=$2; shift ;;
    --runnergroup) group=$2; shift ;;
    --unattended) unattended=yes ;;
    --replace) replace=yes ;;
    --no-default-labels | --disableupdate | --ephemeral) ;;
    *) echo "Unrecognized command-line input arguments: '$1'" >&2; exit 1 ;;
  esac
  shift
done
if [[ -z $unattended || -z $name || -z $url ]]; then echo "missing arguments" >&2; exit 1; fi
if [[ -e $GITHUB_DIR/runners/$name && -z $replace ]]; then
  echo "A runner exists with the same name $name." >&2
  exit 1
fi
printf 'labels=%s\\nurl=%s\\ngroup=%s\\n' "$labels" "$url" "$group" >"$GITHUB_DIR/runners/$name"
# github/fail-after-register: that many registrations fail after reaching GitHub (the connection
# lost before the answer), leaving the runner registered there and the directory unconfigured.
failures=$(delay fail-after-register 0)
if ((failures > 0)); then
  echo $((failures - 1)) >"$GITHUB_DIR/fail-after-register"
  echo "The operation was canceled." >&2
  exit 1
fi
printf 'name=%s\\n' "$name" >"$here/.runner"
echo "Runner successfully added"
`;

const RUN_SH = `# Fake run.sh: see test/support/runner_package.ts.
if [[ ! -e "$here/.runner" ]]; then echo "not configured" >&2; exit 1; fi
name=$(sed -n 's/^name=//p' "$here/.runner")
env >"$GITHUB_DIR/env-run-$name"
"$here/bin/Runner.Listener" "$name" &
listener=$!
trap 'kill -TERM "$listener" 2>/dev/null; wait "$listener"; echo "stopped $name" >>"$GITHUB_DIR/events"; exit 0' TERM INT
wait "$listener"
`;

const LISTENER_SH = `# Fake Runner.Listener: see test/support/runner_package.ts.
if [[ \${1:-} == --version ]]; then
  dotnet_start
  echo "2.323.0"
  exit 0
fi
name=$1
dotnet_start
refusals=$(cat "$GITHUB_DIR/refuse-listener" 2>/dev/null || echo 0)
if ((refusals > 0)); then
  echo $((refusals - 1)) >"$GITHUB_DIR/refuse-listener"
  echo "refused $name" >>"$GITHUB_DIR/events"
  echo "An error occurred: the runner version is deprecated and cannot receive messages."
  exit 0
fi
sleep "$(delay listen-delay 0)" # connecting to GitHub
echo "√ Connected to GitHub"
echo "Current runner version: '2.323.0'"
echo "$(date -u '+%Y-%m-%d %H:%M:%SZ'): Listening for Jobs"
# github/listen-spam: that many bytes of output right after (the runner can be chatty).
head -c "$(delay listen-spam 0)" /dev/zero | tr '\\0' 'x'
echo "listening $name $$" >>"$GITHUB_DIR/events"
env >"$GITHUB_DIR/env-job-$name"
(
  umask >"$GITHUB_DIR/umask-job-$name"
  if [[ -e "$GITHUB_DIR/job-step" ]]; then
    bash "$GITHUB_DIR/job-step" >"$GITHUB_DIR/job-step-$name.out" 2>&1
    echo $? >"$GITHUB_DIR/job-step-$name.status"
  fi
  exec sleep 3600
) &
job=$!
echo "job $name $job" >>"$GITHUB_DIR/events"
trap 'kill "$job" 2>/dev/null; exit 0' TERM
wait "$job"
`;

const INSTALLDEPENDENCIES_SH =
  `# Fake bin/installdependencies.sh: see test/support/runner_package.ts.
if [[ $(id -u) -ne 0 ]]; then echo "Need to run with sudo privilege"; exit 1; fi
echo "installdependencies" >>"$GITHUB_DIR/events"
# The harness may give another os-release (in REFRESH_SYSTEM_ROOT), to act out another system.
os_release=\${REFRESH_SYSTEM_ROOT:-}/etc/os-release
if [[ ! -e $os_release ]]; then echo "/etc/os-release doesn't exists."; exit 1; fi
# Like the real one, by ID only: Amazon Linux 2023 (ID=amzn, ID_LIKE=fedora) is not known.
id=$(. "$os_release" && echo "$ID")
case $id in
  debian | ubuntu)
    # As the real one: the package lists, libkrb5-3 and zlib1g, then of each list of alternatives
    # the first the archive has (its libssl1.x attempts left out: no current image has them, and
    # the real one goes on without them).
    apt-get update && apt-get install -y libkrb5-3 zlib1g || exit 1
    for candidates in "liblttng-ust1 liblttng-ust0" "libicu76 libicu75 libicu74 libicu73 libicu72 \\
      libicu71 libicu70 libicu69 libicu68 libicu67 libicu66 libicu65 libicu63 libicu60 libicu57 \\
      libicu55 libicu52"; do
      for package in $candidates; do apt-get install -y "$package" && continue 2; done
      exit 1
    done
    ;;
  fedora | rhel | centos) dnf install -y lttng-ust openssl-libs krb5-libs zlib libicu ;;
  *) echo "Can't detect current OS type based on /etc/os-release."; exit 1 ;;
esac
`;
