/**
 * Keeps secrets out of output: every string the entry prints passes through a {@link Redactor}
 * that knows the credential from the environment and every token fetched during the run.
 *
 * @module
 */

export const REDACTED = "***";

export class Redactor {
  #secrets: string[] = [];

  /** Remembers a secret; short values are ignored since they would mask ordinary text. */
  add(secret: string | undefined): void {
    if (!secret || secret.length < 6 || this.#secrets.includes(secret)) return;
    this.#secrets.push(secret);
    // PEM keys: also mask each line, in case one is printed on its own.
    if (secret.includes("\n")) {
      for (const line of secret.split(/\r?\n/)) {
        this.add(line.trim().startsWith("-----") ? undefined : line.trim());
      }
    }
    this.#secrets.sort((a, b) => b.length - a.length);
  }

  get secrets(): readonly string[] {
    return this.#secrets;
  }

  redact(text: string): string {
    let out = text;
    for (const secret of this.#secrets) out = out.split(secret).join(REDACTED);
    return out;
  }
}
