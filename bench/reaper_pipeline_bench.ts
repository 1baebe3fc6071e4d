/**
 * The reaper's critical path without moto: `reapInstances` against in-memory stand-ins of
 * DynamoDB and EC2 that answer every call after a fixed latency (DynamoDB 40 ms, EC2 150 ms, the
 * internet latencies issue #17 measured) and spend next to no CPU, so the wall time is the
 * reaper's own schedule: how many calls wait one after another, not how fast an emulator runs.
 *
 *     sh test/support/tools.sh deno run --allow-env --allow-read \
 *       bench/reaper_pipeline_bench.ts [--instances 1000] [--expired 500] [--runs 3]
 *
 * The pool: N instances alive in EC2, tagged as the pool's, each with a record (the first
 * `--expired` past their threshold, the rest idle or running, unexpired), a fresh heartbeat and a
 * worker signal. Each run starts from that pool again. Prints, per run, the wall time, the calls
 * by operation and the most calls in flight at once; exits 1 unless every expired instance was
 * terminated and expunged and nothing else touched.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseDesiredState } from "../lib/config.ts";
import { OWNER_TAG, timestamp } from "../lib/contract.ts";
import { reapInstances } from "../lib/reaper.ts";
import { runBudget } from "../lib/task.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    instances: { type: "string" },
    expired: { type: "string" },
    runs: { type: "string" },
  },
});
const total = Number(values.instances ?? 1000);
const expired = Number(values.expired ?? 500);
const runs = Number(values.runs ?? 3);
if (![total, expired, runs].every(Number.isSafeInteger) || expired < 1 || expired >= total) {
  throw new RangeError(
    `expected whole numbers, 1 <= --expired < --instances, got ${JSON.stringify(values)}`,
  );
}
const LATENCY_MS = { DynamoDB: 40, EC2: 150 };
const TABLE = "bench-pool-ci-table";

const desired = parseDesiredState({
  args: [
    "--region",
    "us-east-1",
    "--table",
    TABLE,
    "--launch-template-name",
    "bench-pool-ci-launch-template",
    "--only",
    "reaper",
  ],
  env: {},
  readTextFile: Deno.readTextFileSync,
});
if (desired === "help") throw new Error("unexpected help");

type Item = Record<string, unknown>;

/** The seeded pool: items by `PK|SK`, instances by id. */
function seed(now: Date) {
  const items = new Map<string, Item>();
  const instances = new Map<string, { state: string; launched: Date }>();
  const put = (item: Item) => items.set(`${item.PK}|${item.SK}`, item);
  for (let i = 0; i < total; i++) {
    const id = `i-0${i.toString(16).padStart(16, "0")}`;
    const state = i < expired ? "idle" : i % 2 ? "running" : "idle";
    const threshold = timestamp(new Date(now.getTime() + (i < expired ? -3600_000 : 3600_000)));
    const updatedAt = timestamp(now);
    put({ PK: "TYPE#INSTANCE", SK: `ID#${id}`, state, threshold, runId: "", updatedAt });
    put({ PK: "TYPE#HEARTBEAT", SK: `ID#${id}`, updatedAt });
    put({ PK: "TYPE#WS", SK: `ID#${id}`, updatedAt, value: { state: "UD_REG_OK", runId: "" } });
    instances.set(id, { state: "running", launched: new Date(now.getTime() - 3600_000) });
  }
  return { items, instances };
}

/** Counts calls by operation and the most in flight at once. */
class Calls {
  counts: Record<string, number> = {};
  inFlight = 0;
  most = 0;
  async time<T>(service: keyof typeof LATENCY_MS, operation: string, answer: () => T) {
    this.counts[`${service}.${operation}`] = (this.counts[`${service}.${operation}`] ?? 0) + 1;
    this.most = Math.max(this.most, ++this.inFlight);
    await new Promise((resolve) => setTimeout(resolve, LATENCY_MS[service]));
    this.inFlight--;
    return answer();
  }
}

/** A DynamoDB stand-in: the reaper's Query, UpdateItem and BatchWriteItem. */
function fakeDynamo(items: Map<string, Item>, calls: Calls) {
  return {
    send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      // The SDK commands' inputs, read loosely: a stand-in, not a model of the API.
      // deno-lint-ignore no-explicit-any
      const input = command.input as Record<string, any>;
      const name = command.constructor.name.replace(/Command$/, "");
      return calls.time("DynamoDB", name, () => {
        if (name === "Query") {
          const pk = input.ExpressionAttributeValues[":pk"];
          const found = [...items.values()].filter((i) => i.PK === pk);
          return { Items: found, ScannedCount: found.length };
        }
        if (name === "Update") {
          const item = items.get(`${input.Key.PK}|${input.Key.SK}`);
          if (!item || item.state === "terminated") {
            throw Object.assign(new Error("condition"), {
              name: "ConditionalCheckFailedException",
            });
          }
          Object.assign(item, { state: "terminated", runId: "", threshold: "locked" });
          return {};
        }
        if (name === "BatchWrite") {
          for (const { DeleteRequest } of input.RequestItems[TABLE]) {
            items.delete(`${DeleteRequest.Key.PK}|${DeleteRequest.Key.SK}`);
          }
          return { UnprocessedItems: {} };
        }
        throw new Error(`unexpected DynamoDB ${name}`);
      });
    },
  };
}

/** An EC2 stand-in: templates (none), instances listed 1,000 per page, terminations. */
function fakeEc2(instances: Map<string, { state: string; launched: Date }>, calls: Calls) {
  return {
    send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      // The SDK commands' inputs, read loosely: a stand-in, not a model of the API.
      // deno-lint-ignore no-explicit-any
      const input = command.input as Record<string, any>;
      const name = command.constructor.name.replace(/Command$/, "");
      return calls.time("EC2", name, () => {
        if (name === "DescribeLaunchTemplates") return { LaunchTemplates: [] };
        if (name === "TerminateInstances") {
          for (const id of input.InstanceIds) instances.get(id)!.state = "terminated";
          return {};
        }
        if (name !== "DescribeInstances") throw new Error(`unexpected EC2 ${name}`);
        const byId = input.Filters.find((f: { Name: string }) => f.Name === "instance-id");
        const ids = byId ? byId.Values as string[] : [...instances.keys()];
        const states = input.Filters.find((f: { Name: string }) =>
          f.Name === "instance-state-name"
        );
        const listed = ids.filter((id) =>
          instances.has(id) && (!states || states.Values.includes(instances.get(id)!.state))
        );
        const start = Number(input.NextToken ?? 0);
        const page = listed.slice(start, start + 1000).map((id) => ({
          InstanceId: id,
          State: { Name: instances.get(id)!.state },
          LaunchTime: instances.get(id)!.launched,
          ImageId: "ami-1e749f67",
          Tags: [{ Key: OWNER_TAG, Value: TABLE }],
        }));
        const next = start + 1000 < listed.length ? String(start + 1000) : undefined;
        return { Reservations: [{ Instances: page }], NextToken: next };
      });
    },
  };
}

let ok = true;
console.log(
  `reaper over ${total} instances, ${expired} expired; latency per call: DynamoDB ${LATENCY_MS.DynamoDB} ms, EC2 ${LATENCY_MS.EC2} ms; --reap-concurrency ${desired.reaper.concurrency}`,
);
for (let run = 1; run <= runs; run++) {
  const now = new Date();
  const { items, instances } = seed(now);
  const calls = new Calls();
  const started = performance.now();
  const outcome = await reapInstances(
    {
      desired,
      clients: { ddb: fakeDynamo(items, calls), ec2: fakeEc2(instances, calls) },
      now: () => now,
      log: { info: () => {}, warn: () => {} },
      dryRun: false,
      secret: () => {},
      budget: runBudget(10 * 60_000),
    } as unknown as Parameters<typeof reapInstances>[0],
  );
  const seconds = (performance.now() - started) / 1000;
  const all = Object.values(calls.counts).reduce((a, b) => a + b, 0);
  console.log(
    `run ${run}: ${seconds.toFixed(2)} s wall, ${all} calls, at most ${calls.most} in flight`,
  );
  console.log(`  ${JSON.stringify(calls.counts)}`);
  const terminated = [...instances.values()].filter((i) => i.state === "terminated").length;
  const records = [...items.keys()].filter((k) => k.startsWith("TYPE#INSTANCE|")).length;
  const reaped = terminated === expired && records === total - expired &&
    items.size === 3 * (total - expired);
  if (!reaped) {
    console.log(`  MISS: ${terminated} terminated, ${records} records left: ${outcome.summary}`);
  }
  ok &&= reaped;
}
Deno.exit(ok ? 0 : 1);
