import assert from "node:assert/strict";
import { Redactor } from "../lib/redact.ts";

Deno.test("redactor masks every registered secret, longest first", () => {
  const r = new Redactor();
  r.add("ghp_abcdef123456");
  r.add("ghp_abcdef123456_longer");
  assert.equal(r.redact("a ghp_abcdef123456_longer b ghp_abcdef123456"), "a *** b ***");
});

Deno.test("redactor masks each line of a multi-line key on its own", () => {
  const r = new Redactor();
  r.add("-----BEGIN KEY-----\nAAAABBBBCCCC\nDDDDEEEEFFFF\n-----END KEY-----");
  assert.equal(r.redact("oops DDDDEEEEFFFF"), "oops ***");
  assert.equal(r.redact("-----BEGIN KEY-----"), "-----BEGIN KEY-----");
});

Deno.test("redactor ignores empty and very short values that would mask ordinary text", () => {
  const r = new Redactor();
  r.add(undefined);
  r.add("");
  r.add("abc");
  assert.equal(r.redact("abc def"), "abc def");
  assert.equal(r.secrets.length, 0);
});
