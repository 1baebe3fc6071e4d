import assert from "node:assert/strict";
import { classifyPoolMessage } from "./support/control_plane.ts";

const CONFIG = { large: { cpu: 2, mmem: 4096 } };
const DEFAULTS = { usageClass: "on-demand", allowedInstanceTypes: ["c*", "m*", "r*"] };
const NOW = new Date("2026-12-06T12:00:00Z");
const MESSAGE = {
  id: "i-0123456789abcdef0",
  resourceClass: "large",
  instanceType: "m5.large",
  cpu: 2,
  mmem: 8192,
  usageClass: "on-demand",
  threshold: "2026-12-06T12:30:00Z",
};

Deno.test("the harness's provision classifies pool messages as fleet-actions' provision does", () => {
  const verdict = (change: Record<string, unknown>, asked = DEFAULTS) =>
    classifyPoolMessage({ ...MESSAGE, ...change }, CONFIG, asked, NOW).status;
  assert.equal(verdict({}), "ok");
  // Put back for another run to take: a spot instance for an on-demand ask, a type outside.
  assert.equal(verdict({ usageClass: "spot" }), "requeue");
  assert.equal(verdict({ instanceType: "t3.large" }), "requeue");
  assert.equal(verdict({ instanceType: "C6I.LARGE" }), "ok", "patterns ignore case");
  assert.equal(
    verdict({ usageClass: "spot" }, { ...DEFAULTS, usageClass: "spot" }),
    "ok",
  );
  // Discarded: unknown class, another cpu, less memory, expired, no usage class.
  assert.equal(verdict({ resourceClass: "huge" }), "delete");
  assert.equal(verdict({ cpu: 4 }), "delete");
  assert.equal(verdict({ mmem: 2048 }), "delete");
  assert.equal(verdict({ threshold: "2026-12-06T11:59:59Z" }), "delete");
  assert.equal(verdict({ usageClass: "" }), "delete");
});
