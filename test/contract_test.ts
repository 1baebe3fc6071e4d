import assert from "node:assert/strict";
import { idOf, item, pk, queueName, sha256, sk, timestamp } from "../lib/contract.ts";

Deno.test("timestamp drops fractional seconds and keeps UTC Z", () => {
  assert.equal(timestamp(new Date("2025-04-24T18:31:04.567Z")), "2025-04-24T18:31:04Z");
  assert.equal(timestamp(new Date("2025-04-24T20:31:04+02:00")), "2025-04-24T18:31:04Z");
});

Deno.test("keys follow TYPE#<ENTITY> and ID#<id>", () => {
  assert.equal(pk("INSTANCE"), "TYPE#INSTANCE");
  assert.equal(sk("i-0abc"), "ID#i-0abc");
  assert.equal(idOf("ID#i-0abc"), "i-0abc");
});

Deno.test("item carries the contract's common attributes", () => {
  assert.deepEqual(
    item("METADATA", "subnet_ids", new Date("2026-01-01T00:00:00.999Z"), { value: ["s"] }),
    {
      PK: "TYPE#METADATA",
      SK: "ID#subnet_ids",
      entityType: "METADATA",
      identifier: "subnet_ids",
      value: ["s"],
      updatedAt: "2026-01-01T00:00:00Z",
    },
  );
});

Deno.test("queueName keeps plain names as DESIGN.md gives them", () => {
  assert.equal(queueName("acme-widgets", "large"), "acme-widgets-large-ci-pool");
  assert.equal(queueName("acme-widgets", "2xlarge"), "acme-widgets-2xlarge-ci-pool");
});

Deno.test("queueName sanitizes to SQS's alphabet and keeps classes apart", () => {
  const dotted = queueName("acme-widgets", "gpu.large");
  const dashed = queueName("acme-widgets", "gpu-large");
  assert.match(dotted, /^[A-Za-z0-9_-]+$/);
  assert.notEqual(dotted, dashed);
  assert.equal(dotted, `acme-widgets-gpu-large-${sha256("gpu.large").slice(0, 8)}-ci-pool`);
  assert.equal(
    queueName("my.org-repo.js", "large"),
    `my-org-repo-js-large-${sha256("large").slice(0, 8)}-ci-pool`,
  );
});

Deno.test("queueName stays within 80 characters and unique when names are long", () => {
  const prefix = "o".repeat(39) + "-" + "r".repeat(60);
  const a = queueName(prefix, "large");
  const b = queueName(prefix, "xlarge");
  assert.ok(a.length <= 80 && b.length <= 80, `${a.length} ${b.length}`);
  assert.notEqual(a, b);
  assert.ok(a.endsWith("-ci-pool"));
});
