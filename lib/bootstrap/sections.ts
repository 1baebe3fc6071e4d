/**
 * The generated bootstrap's spec-dependent pieces: bash single-quoting for the baked-in settings,
 * and the here-documents that carry the AWS client and the operator's setup script.
 *
 * @module
 */

/** Single-quotes a value for bash. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** The AWS client (lib/bootstrap_aws_client.ts) as a quoted here-document. */
export function awsClientSection(python: string): string {
  return [
    "# The AWS client (Python 3, standard library only): every DynamoDB and EC2 call, SigV4-signed",
    "# with the instance role's credentials from instance metadata. Written to a root-only file.",
    "write_aws_client() {",
    "  cat >\"$1\" <<'REFRESH_AWS_CLIENT'",
    python + "REFRESH_AWS_CLIENT",
    "}",
    "",
  ].join("\n");
}

/** The operator's setup script as a quoted here-document (written, never expanded). */
export function preRunnerSection(script: string | undefined): string {
  if (script === undefined || script.trim() === "") {
    return [
      "# No setup script was given: setup succeeds at once.",
      "write_pre_runner_script() { return 1; }",
      "",
    ].join("\n");
  }
  const lines = script.split("\n");
  let delimiter = "REFRESH_PRE_RUNNER_SCRIPT";
  for (let i = 1; lines.includes(delimiter); i++) delimiter = `REFRESH_PRE_RUNNER_SCRIPT_${i}`;
  const body = script.endsWith("\n") ? script : `${script}\n`;
  return [
    "# The operator's setup script (refresh --pre-runner-script), written to its own file and run",
    "# first. Returns 1 when there is none.",
    "write_pre_runner_script() {",
    `  cat >"$1" <<'${delimiter}'`,
    `${body}${delimiter}`,
    "}",
    "",
  ].join("\n");
}
