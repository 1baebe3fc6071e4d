import assert from "node:assert/strict";
import {
  type Heartbeat,
  limitFor,
  NO_CLASS,
  parseMaxPerRun,
  planRollout,
  type PoolInstance,
  type PoolReading,
  poolTable,
  type RecordRow,
  type RolloutInputs,
  TEMPLATE_ID_TAG,
  TEMPLATE_VERSION_TAG,
  type TemplateDefault,
  versionOf,
  type WorkerSignal,
} from "../lib/rollout.ts";

const NOW = new Date("2026-01-15T12:00:00Z");
const TEMPLATE: TemplateDefault = { id: "lt-0123456789abcdef0", version: 2, ami: "ami-22222222" };
const INPUTS: RolloutInputs = {
  maxPerRun: { percent: 25 },
  heartbeatStaleSec: 300,
  bootGraceMin: 15,
};

/** A timestamp `minutes` from NOW. */
function at(minutes: number): string {
  return new Date(NOW.getTime() + minutes * 60_000).toISOString().replace(/\.\d+Z$/, "Z");
}

interface Spec {
  id: string;
  state?: string;
  cls?: string;
  version?: number | null;
  templateId?: string;
  image?: string;
  launchedMin?: number;
  heartbeatMin?: number | null;
  signal?: string;
  threshold?: string;
  runId?: string;
}

/** A reading of the pool from compact specs: each instance alive in EC2 with a fresh heartbeat. */
function reading(specs: Spec[], extra: Partial<PoolReading> = {}): PoolReading {
  const records: RecordRow[] = [];
  const instances = new Map<string, PoolInstance>();
  const heartbeats = new Map<string, Heartbeat>();
  const signals = new Map<string, WorkerSignal>();
  for (const s of specs) {
    records.push({
      id: s.id,
      state: s.state ?? "idle",
      threshold: s.threshold ?? at(5),
      runId: s.runId ?? "",
      resourceClass: s.cls ?? "large",
    });
    const version = s.version === undefined ? 1 : s.version;
    instances.set(s.id, {
      id: s.id,
      launchTime: at(s.launchedMin ?? -60),
      imageId: s.image ?? (version === 2 ? TEMPLATE.ami : "ami-11111111"),
      tags: version === null ? {} : {
        [TEMPLATE_ID_TAG]: s.templateId ?? TEMPLATE.id,
        [TEMPLATE_VERSION_TAG]: String(version),
        "refresh:pool": "acme-widgets-ci-table",
      },
    });
    if (s.heartbeatMin !== null) {
      heartbeats.set(s.id, { id: s.id, updatedAt: at(s.heartbeatMin ?? 0) });
    }
    if (s.signal) signals.set(s.id, { id: s.id, state: s.signal, runId: "", updatedAt: at(-1) });
  }
  return {
    records,
    instances,
    heartbeats,
    signals,
    template: TEMPLATE,
    taken: new Set(),
    now: NOW,
    ...extra,
  };
}

const ids = (plan: { drains: { id: string }[] }) => plan.drains.map((d) => d.id);

Deno.test("parseMaxPerRun takes a whole number or a whole percentage", () => {
  assert.deepEqual(parseMaxPerRun("3"), { count: 3 });
  assert.deepEqual(parseMaxPerRun("0"), { count: 0 });
  assert.deepEqual(parseMaxPerRun("25%"), { percent: 25 });
  assert.deepEqual(parseMaxPerRun(" 100% "), { percent: 100 });
  for (const bad of ["101%", "-1", "2.5", "x", "", "%", "1e3", "25 percent"]) {
    const result = parseMaxPerRun(bad);
    assert.equal(typeof result, "string", bad);
    assert.match(result as string, /expected a whole number >= 0 or a percentage/);
    assert.ok((result as string).includes(JSON.stringify(bad)), result as string);
  }
});

Deno.test("limitFor rounds a percentage up, so a small class still moves", () => {
  assert.equal(limitFor({ percent: 25 }, 8), 2);
  assert.equal(limitFor({ percent: 25 }, 9), 3);
  assert.equal(limitFor({ percent: 25 }, 1), 1);
  assert.equal(limitFor({ percent: 25 }, 0), 0);
  assert.equal(limitFor({ percent: 0 }, 50), 0);
  assert.equal(limitFor({ count: 4 }, 2), 4);
});

Deno.test("versionOf reads EC2's launch template tags, then falls back to the image", () => {
  const instance = (tags: Record<string, string>, imageId?: string): PoolInstance => ({
    id: "i-1",
    tags,
    imageId,
  });
  const tags = (id: string, version: string) => ({
    [TEMPLATE_ID_TAG]: id,
    [TEMPLATE_VERSION_TAG]: version,
  });
  assert.deepEqual(versionOf(instance(tags(TEMPLATE.id, "2"), "ami-other"), TEMPLATE), {
    kind: "current",
    by: "tag",
  });
  assert.deepEqual(versionOf(instance(tags(TEMPLATE.id, "1"), TEMPLATE.ami), TEMPLATE), {
    kind: "outdated",
    by: "tag",
    detail: "launched from version 1, the default is 2",
  });
  // A default moved back to an older version: the newer instances are not the default either.
  assert.equal(versionOf(instance(tags(TEMPLATE.id, "3")), TEMPLATE).kind, "outdated");
  const other = versionOf(instance(tags("lt-0fffffffffffffff0", "2")), TEMPLATE);
  assert.equal(other.kind, "outdated");
  assert.match(
    (other as { detail: string }).detail,
    /template lt-0fffffffffffffff0 version 2, not lt-/,
  );
  assert.equal(versionOf(instance(tags(TEMPLATE.id, "$Default")), TEMPLATE).kind, "unknown");
  assert.deepEqual(versionOf(instance({}, TEMPLATE.ami), TEMPLATE), {
    kind: "current",
    by: "image",
  });
  const byImage = versionOf(instance({}, "ami-11111111"), TEMPLATE);
  assert.equal(byImage.kind, "outdated");
  assert.match((byImage as { detail: string }).detail, /runs ami-11111111.*judged by image/);
  assert.equal(versionOf(instance({}), TEMPLATE).kind, "unknown");
  // One of the two tags alone is not EC2's stamp: the image decides.
  assert.deepEqual(
    versionOf(instance({ [TEMPLATE_VERSION_TAG]: "1" }, TEMPLATE.ami), TEMPLATE),
    { kind: "current", by: "image" },
  );
});

Deno.test("planRollout drains at most the limit of outdated idle instances per class, oldest first", () => {
  const specs: Spec[] = [];
  for (let i = 0; i < 8; i++) specs.push({ id: `i-l${i}`, launchedMin: -100 + i });
  for (let i = 0; i < 3; i++) specs.push({ id: `i-x${i}`, cls: "xlarge", launchedMin: -10 - i });
  specs.push({ id: "i-new", version: 2, launchedMin: -500 });

  const plan = planRollout(reading(specs), INPUTS);

  // large: 9 idle can serve, 25% rounded up = 3; xlarge: 3 idle, 1.
  assert.deepEqual(ids(plan), ["i-l0", "i-l1", "i-l2", "i-x2"]);
  assert.ok(plan.drains.every((d) => d.kind === "outdated"));
  assert.equal(plan.drains[0].detail, "launched from version 1, the default is 2");
  assert.equal(plan.view.classes.large.deferred, 5);
  assert.equal(plan.view.classes.xlarge.deferred, 2);
  assert.deepEqual(plan.warnings, []);
});

Deno.test("planRollout with a count limit takes that many per class; 0 turns rollout off", () => {
  const specs: Spec[] = [1, 2, 3, 4].map((n) => ({ id: `i-${n}`, launchedMin: -n }));
  specs.push({ id: "i-sick", heartbeatMin: -30 });

  const two = planRollout(reading(specs), { ...INPUTS, maxPerRun: { count: 2 } });
  assert.deepEqual(ids(two), ["i-sick", "i-4", "i-3"]);

  const off = planRollout(reading(specs), { ...INPUTS, maxPerRun: { count: 0 } });
  assert.deepEqual(ids(off), ["i-sick"], "health still drains with rollout off");
  assert.equal(off.view.classes.large.deferred, 4);
  assert.equal(off.view.classes.large.outdated, 5);
});

Deno.test("planRollout never drains a claimed, running or created instance, however outdated", () => {
  const plan = planRollout(
    reading([
      { id: "i-claimed", state: "claimed", runId: "run-1", signal: "UD_REG_FAILED" },
      { id: "i-running", state: "running", runId: "run-2", heartbeatMin: -60 },
      { id: "i-created", state: "created", runId: "run-3", heartbeatMin: null, launchedMin: -90 },
      { id: "i-terminated", state: "terminated" },
    ]),
    { ...INPUTS, maxPerRun: { percent: 100 } },
  );

  assert.deepEqual(plan.drains, []);
  const large = plan.view.classes.large;
  assert.deepEqual(
    [large.idle, large.claimed, large.running, large.created, large.outdated, large.unhealthy],
    [0, 1, 1, 1, 3, 0],
  );
});

Deno.test("planRollout drains unhealthy idle instances beyond the limit and leaves booting ones", () => {
  const plan = planRollout(
    reading([
      { id: "i-failed", version: 2, signal: "UD_REMOVE_REG_FAILED" },
      { id: "i-stale", version: 2, heartbeatMin: -6 },
      { id: "i-fresh", version: 2, heartbeatMin: -4 },
      { id: "i-silent", version: 2, heartbeatMin: null, launchedMin: -16 },
      { id: "i-booting", version: 1, heartbeatMin: null, launchedMin: -14 },
      { id: "i-ok-signal", version: 2, signal: "UD_REMOVE_REG_REMOVE_RUN_OK" },
    ]),
    { ...INPUTS, maxPerRun: { count: 0 } },
  );

  assert.deepEqual(
    plan.drains.map((d) => [d.id, d.kind]),
    [["i-failed", "failed-signal"], ["i-silent", "no-heartbeat"], ["i-stale", "stale-heartbeat"]],
  );
  const detail = Object.fromEntries(plan.drains.map((d) => [d.id, d.detail]));
  assert.equal(detail["i-failed"], `worker signal UD_REMOVE_REG_FAILED at ${at(-1)}`);
  assert.equal(detail["i-stale"], `last heartbeat at ${at(-6)}, more than 300 s ago`);
  assert.equal(detail["i-silent"], `no heartbeat since launch at ${at(-16)}, more than 15 min ago`);
  const large = plan.view.classes.large;
  assert.equal(large.unhealthy, 3);
  assert.equal(large.booting, 1);
  assert.equal(large.idle, 6);
});

Deno.test("planRollout drains a booting outdated instance by the rollout rule, never as unhealthy", () => {
  const plan = planRollout(
    reading([{ id: "i-booting", heartbeatMin: null, launchedMin: -1 }]),
    { ...INPUTS, maxPerRun: { count: 1 } },
  );
  assert.deepEqual(plan.drains.map((d) => [d.id, d.kind]), [["i-booting", "outdated"]]);
  assert.equal(plan.view.classes.large.booting, 1);
  assert.equal(plan.view.classes.large.unhealthy, 0);
});

Deno.test("planRollout with the heartbeat limit 0 judges only worker signals", () => {
  const plan = planRollout(
    reading([
      { id: "i-stale", version: 2, heartbeatMin: -600 },
      { id: "i-silent", version: 2, heartbeatMin: null, launchedMin: -600 },
      { id: "i-failed", version: 2, signal: "UD_FAILED" },
    ]),
    { ...INPUTS, heartbeatStaleSec: 0 },
  );
  assert.deepEqual(ids(plan), ["i-failed"]);
});

Deno.test("planRollout leaves alone what the reaper already takes and what is not among the pool's instances", () => {
  const r = reading([
    { id: "i-expired", threshold: at(-1), signal: "UD_REG_FAILED" },
    { id: "i-untagged", heartbeatMin: -60 },
    { id: "i-outdated" },
  ]);
  r.taken.add("i-expired");
  r.instances.delete("i-untagged");

  const plan = planRollout(r, { ...INPUTS, maxPerRun: { percent: 100 } });

  assert.deepEqual(ids(plan), ["i-outdated"]);
  assert.equal(plan.view.classes.large.unknownVersion, 1);
  assert.equal(plan.view.classes.large.idle, 3);
});

Deno.test("planRollout keeps the lock's condition values as read", () => {
  const plan = planRollout(
    reading([{ id: "i-1", threshold: "2026-01-15T12:05:00Z", runId: "" }]),
    INPUTS,
  );
  const [drain] = plan.drains;
  assert.deepEqual(
    [drain.state, drain.threshold, drain.runId, drain.resourceClass],
    ["idle", "2026-01-15T12:05:00Z", "", "large"],
  );
});

Deno.test("planRollout without a template judges health only and counts every version unknown", () => {
  const plan = planRollout(
    reading([{ id: "i-old" }, { id: "i-stale", heartbeatMin: -10 }], { template: null }),
    { ...INPUTS, maxPerRun: { percent: 100 } },
  );
  assert.deepEqual(ids(plan), ["i-stale"]);
  assert.equal(plan.view.template, null);
  const large = plan.view.classes.large;
  assert.deepEqual([large.current, large.outdated, large.unknownVersion], [0, 0, 2]);
});

Deno.test("planRollout warns about a heartbeat timestamp it cannot read and does not drain for it", () => {
  const r = reading([{ id: "i-odd", version: 2 }]);
  r.heartbeats.set("i-odd", { id: "i-odd", updatedAt: "1700000000" });
  const plan = planRollout(r, INPUTS);
  assert.deepEqual(plan.drains, []);
  assert.deepEqual(plan.warnings, [
    'heartbeat of i-odd has updatedAt "1700000000"; expected a timestamp like 2025-04-24T18:31:04Z, so its health is not judged',
  ]);
});

Deno.test("planRollout builds the pool view per class: states, versions, health, oldest age", () => {
  const r = reading([
    { id: "i-a", version: 2, launchedMin: -30 },
    { id: "i-b", launchedMin: -200 },
    { id: "i-c", state: "claimed", runId: "run-1", version: 2, launchedMin: -5 },
    { id: "i-d", state: "running", runId: "run-2", version: null, image: TEMPLATE.ami },
    { id: "i-e", cls: "xlarge", state: "created", runId: "run-3", version: 1, launchedMin: -3000 },
    { id: "i-f", cls: "", heartbeatMin: -20, version: 2, launchedMin: -2 },
  ]);

  const plan = planRollout(r, { ...INPUTS, maxPerRun: { count: 0 } });

  assert.deepEqual(Object.keys(plan.view.classes), [NO_CLASS, "large", "xlarge"]);
  assert.deepEqual(plan.view.classes.large, {
    idle: 2,
    claimed: 1,
    running: 1,
    created: 0,
    current: 3,
    outdated: 1,
    unknownVersion: 0,
    unhealthy: 0,
    booting: 0,
    deferred: 1,
    oldestLaunch: at(-200),
    oldestAgeMin: 200,
  });
  assert.equal(plan.view.classes.xlarge.oldestAgeMin, 3000);
  assert.equal(plan.view.classes[NO_CLASS].unhealthy, 1);
  assert.deepEqual(plan.view.template, TEMPLATE);
  assert.deepEqual(poolTable(plan.view), [
    [
      "class",
      "idle",
      "claimed",
      "running",
      "created",
      "current",
      "outdated",
      "unknown",
      "unhealthy",
      "booting",
      "oldest",
    ],
    [NO_CLASS, "1", "0", "0", "0", "1", "0", "0", "1", "0", "2 min"],
    ["large", "2", "1", "1", "0", "3", "1 (1 left)", "0", "0", "0", "3 h"],
    ["xlarge", "0", "0", "0", "1", "0", "1", "0", "0", "0", "2 d"],
  ]);
});

Deno.test("planRollout of a converged pool drains nothing", () => {
  const specs: Spec[] = Array.from({ length: 20 }, (_, i) => ({
    id: `i-${i}`,
    version: 2,
    state: i % 3 ? "idle" : "running",
  }));
  const plan = planRollout(reading(specs), { ...INPUTS, maxPerRun: { percent: 100 } });
  assert.deepEqual(plan.drains, []);
  assert.equal(plan.view.classes.large.current, 20);
  assert.equal(plan.view.classes.large.deferred, 0);
});
