/**
 * A setup script (`--pre-runner-script`) of the size operators' real ones reach: about 2.6 KB
 * gzip-compressed, mostly random base64 (which compresses as badly as text can) that it
 * checksums, and a `#` line in a here-document, which it prints. Running it shows the whole
 * script arrived intact; its output says so.
 */
import { Buffer } from "node:buffer";

/** The line the script prints from its here-document. */
export const BULKY_SETUP_NOTE = "# kept: a comment line inside a here-document";

export interface BulkySetupScript {
  script: string;
  /** `sha256sum`'s line for the data the script checksums, as the script prints it. */
  checksumLine: string;
}

/** Builds the script: `dataBytes` of random base64 in 76-character lines. */
export async function bulkySetupScript(dataBytes = 3500): Promise<BulkySetupScript> {
  const random = crypto.getRandomValues(new Uint8Array(Math.ceil(dataBytes * 0.75)));
  const data = Buffer.from(random).toString("base64").slice(0, dataBytes)
    .replace(/(.{76})/g, "$1\n").replace(/\n$/, "");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${data}\n`));
  const hex = Buffer.from(digest).toString("hex");
  const script = [
    "#!/bin/bash",
    "# An operator's setup script: installs what the jobs need.",
    "set -euo pipefail",
    "",
    "cat <<'NOTE'",
    BULKY_SETUP_NOTE,
    "NOTE",
    "sha256sum <<'DATA'",
    data,
    "DATA",
    "",
  ].join("\n");
  return { script, checksumLine: `${hex}  -` };
}
