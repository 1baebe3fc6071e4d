/**
 * What docs/deploy/ ships for running refresh as a service (docs/operations.md): the container
 * image definition, the ECS task definition and the systemd unit run the loop with the permission
 * flags every run uses, on the pinned Deno, and give SIGTERM the time to end the cycle in flight.
 */
import assert from "node:assert/strict";
import { PERMISSIONS } from "./support/process.ts";

const read = (path: string) =>
  Deno.readTextFileSync(new URL(`../docs/deploy/${path}`, import.meta.url));
const TOOLS = Deno.readTextFileSync(new URL("./support/tools.sh", import.meta.url));

Deno.test("the container image runs the loop on the pinned Deno with refresh's permissions only, its packages cached at build", () => {
  const dockerfile = read("Dockerfile");
  const pinned = /^DENO_VERSION=(\S+)$/m.exec(TOOLS)![1];
  assert.match(
    dockerfile,
    new RegExp(`^FROM denoland/deno:${pinned.replaceAll(".", "\\.")}$`, "m"),
  );
  assert.match(dockerfile, /^RUN deno cache --frozen refresh\.ts$/m);
  const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(dockerfile)![1]) as string[];
  assert.deepEqual(entrypoint.filter((a) => a.startsWith("--allow")), PERMISSIONS);
  assert.ok(entrypoint.includes("--cached-only"));
  assert.deepEqual(JSON.parse(/^CMD (.*)$/m.exec(dockerfile)![1]), ["--every", "300"]);
  assert.match(dockerfile, /^STOPSIGNAL SIGTERM$/m);
  assert.match(dockerfile, /^USER deno$/m);
});

Deno.test("the ECS task definition runs the loop with a task role, the token as a secret, and time to stop", () => {
  const task = JSON.parse(read("ecs-task-definition.json"));
  assert.deepEqual(task.requiresCompatibilities, ["FARGATE"]);
  assert.match(task.taskRoleArn, /^arn:aws:iam::\d{12}:role\//);
  const [container] = task.containerDefinitions;
  assert.ok(container.command.includes("--every"));
  assert.ok(container.stopTimeout >= 60, "SIGTERM must let a cycle finish");
  assert.deepEqual(container.secrets.map((s: { name: string }) => s.name), ["GITHUB_TOKEN"]);
  assert.ok(!JSON.stringify(container.environment).includes("GITHUB_TOKEN"));
});

Deno.test("the systemd unit runs the loop with refresh's permissions, restarts it, and waits for its cycle on stop", () => {
  const unit = read("refresh.service");
  const exec = /^ExecStart=(.*)$/m.exec(unit)![1].split(" ");
  assert.deepEqual(exec.filter((a) => a.startsWith("--allow")), PERMISSIONS);
  assert.ok(exec.includes("--every"));
  assert.match(unit, /^KillSignal=SIGTERM$/m);
  assert.ok(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)![1]) >= 60);
  assert.match(unit, /^Restart=always$/m);
  assert.match(unit, /^EnvironmentFile=\/etc\/refresh\/environment$/m);
});
