/**
 * The user documentation: README.md and the reference pages of docs/ it links to, for the tests
 * that check what the documentation says (every input named, the examples valid).
 */
const root = new URL("../../", import.meta.url);

/** The documentation's files, README.md first, then docs/*.md by name. */
export function docFiles(): string[] {
  const pages = [...Deno.readDirSync(new URL("docs/", root))]
    .filter((e) => e.isFile && e.name.endsWith(".md")).map((e) => `docs/${e.name}`).sort();
  return ["README.md", ...pages];
}

/** Every documentation file's text, joined. */
export function readDocs(): string {
  return docFiles().map((f) => Deno.readTextFileSync(new URL(f, root))).join("\n");
}
