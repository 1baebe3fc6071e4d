/**
 * The compact form of the bootstrap's parts (lib/script_compact.ts): what it removes, what it
 * never touches (here-document bodies, Python strings), and that bash and Python see the same
 * program in both forms.
 */
import assert from "node:assert/strict";
import { compactPython, compactShell } from "../lib/script_compact.ts";
import { AWS_CLIENT_PY_COMPACT, bootstrapScript, type BootstrapSpec } from "../lib/bootstrap.ts";
import { AWS_CLIENT_PY } from "../lib/bootstrap_aws_client.ts";

const SPEC: BootstrapSpec = {
  table: "acme-widgets-ci-table",
  region: "eu-west-1",
  githubUrl: "https://github.com/acme/widgets",
  poolLabel: "refresh-pool-0123456789abcdef",
  runner: { version: "2.323.0", sha256: { x64: "a".repeat(64), arm64: "b".repeat(64) } },
  preRunnerScript: "#!/bin/bash\n# the operator's comment\n\necho setting up\n",
};

async function run(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${command} ${args.join(" ")} failed: ${stderr}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test("compactShell removes comments and blank lines, keeping the #! line, shellcheck directives and comments it cannot prove are comments", () => {
  const script = [
    "#!/bin/bash",
    "# what this does",
    "",
    "set -u # no -e",
    "f() {",
    "    # an indented comment",
    "  # shellcheck disable=SC2016 # literal",
    "  echo '$x' # after a quote: kept",
    "  n=${#a[@]} # after a $: kept",
    "  echo a#b",
    "}",
    "",
  ].join("\n");
  assert.equal(
    compactShell(script),
    [
      "#!/bin/bash",
      "set -u",
      "f() {",
      "# shellcheck disable=SC2016 # literal",
      "echo '$x' # after a quote: kept",
      "n=${#a[@]} # after a $: kept",
      "echo a#b",
      "}",
      "",
    ].join("\n"),
  );
});

Deno.test("compactShell never touches here-document content, whatever the opener's form", async () => {
  const script = [
    "#!/bin/bash",
    "cat >/etc/sudoers.d/x <<'SUDOERS'",
    "# a sudoers comment",
    "",
    "#includedir /etc/sudoers.d",
    "SUDOERS",
    "# gone",
    'cat <<"A" && cat <<B',
    "# in A",
    "A",
    "# in B: $HOME",
    "",
    "B",
    "\tcat <<-TABS",
    "\t# in TABS",
    "\tTABS",
    "cat <<\\ESCAPED",
    "# in ESCAPED",
    "ESCAPED",
    "x=$(( 1 << 2 )); cat <<<'# here-string'",
    "# gone too",
    "",
  ].join("\n");
  assert.equal(
    compactShell(script),
    [
      "#!/bin/bash",
      "cat >/etc/sudoers.d/x <<'SUDOERS'",
      "# a sudoers comment",
      "",
      "#includedir /etc/sudoers.d",
      "SUDOERS",
      'cat <<"A" && cat <<B',
      "# in A",
      "A",
      "# in B: $HOME",
      "",
      "B",
      "cat <<-TABS",
      "\t# in TABS",
      "\tTABS",
      "cat <<\\ESCAPED",
      "# in ESCAPED",
      "ESCAPED",
      "x=$(( 1 << 2 )); cat <<<'# here-string'",
      "",
    ].join("\n"),
  );
  // What bash prints is the same for both forms: the here-documents' bodies included.
  const printed = (text: string) =>
    run("bash", ["-c", text.replace("/etc/sudoers.d/x", "/dev/stdout")]);
  assert.equal(await printed(compactShell(script)), await printed(script));
});

Deno.test("compactShell keeps the bootstrap the same program: bash defines the same functions and variables", async () => {
  const commented = bootstrapScript(SPEC, { commented: true });
  const compact = compactShell(commented);
  assert.ok(compact.length < commented.length * 0.9, "compaction removed little");
  // Everything but the last line (which starts the bootstrap) is sourced; bash prints the
  // functions it parsed (bodies and here-documents, without comments) and the new variables.
  const declarations = (script: string) =>
    run("bash", [
      "-c",
      'before=" $(compgen -v | tr "\\n" " ") "; source /dev/stdin; declare -f; ' +
      'for v in $(compgen -v); do [[ $before == *" $v "* ]] || declare -p "$v"; done',
    ], script.trimEnd().split("\n").slice(0, -1).join("\n") + "\n");
  const [full, small] = [await declarations(commented), await declarations(compact)];
  assert.match(full, /^write_aws_client \(\) $/m);
  assert.match(full, /^declare -r TABLE="acme-widgets-ci-table"$/m);
  assert.equal(small, full);
});

Deno.test("compactPython keeps the AWS client the same program: Python reads the same tokens", async () => {
  const tokens = (source: string) =>
    run("python3", [
      "-c",
      "import io, sys, tokenize\n" +
      "skip = {tokenize.COMMENT, tokenize.NL}\n" +
      "for t in tokenize.generate_tokens(io.StringIO(sys.stdin.read()).readline):\n" +
      "    if t.type not in skip:\n" +
      "        # An indent's width is no part of the program, only its level.\n" +
      "        text = '' if t.type == tokenize.INDENT else repr(t.string)\n" +
      "        print(tokenize.tok_name[t.type], text)\n",
    ], source);
  assert.equal(AWS_CLIENT_PY_COMPACT, compactPython(AWS_CLIENT_PY));
  assert.ok(
    AWS_CLIENT_PY_COMPACT.length < AWS_CLIENT_PY.length - 1000,
    "compaction removed little",
  );
  const [full, small] = [await tokens(AWS_CLIENT_PY), await tokens(AWS_CLIENT_PY_COMPACT)];
  assert.match(full, /^NAME 'def'$/m);
  assert.equal(small, full);
});

Deno.test("compactPython never touches a triple-quoted string, keeps the header line and makes each indentation level one space", () => {
  const source = [
    "# header: generated by refresh",
    "# gone",
    'TEXT = """first',
    "# inside the string",
    "",
    'last"""',
    'x = \'"""\'  # a quote in a string opens nothing',
    "# gone too",
    "",
    "def f():",
    "    # gone",
    "    return '''a",
    "    # kept''' + \"#\"",
    "",
  ].join("\n");
  assert.equal(
    compactPython(source),
    [
      "# header: generated by refresh",
      'TEXT = """first',
      "# inside the string",
      "",
      'last"""',
      'x = \'"""\'',
      "def f():",
      " return '''a",
      "    # kept''' + \"#\"",
      "",
    ].join("\n"),
  );
});
