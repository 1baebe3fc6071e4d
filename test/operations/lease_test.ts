/**
 * The lease on the pool (lib/operations/lease.ts) against moto's DynamoDB: one holder at a time,
 * renewals only by the holder, a dead holder's lease taken once it lapsed plus the skew allowance,
 * and clocks that disagree by less than the allowance never letting two runs hold it.
 */
import assert from "node:assert/strict";
import { CreateTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { Lease, skewAllowanceSec } from "../../lib/operations/lease.ts";
import { tableDefinition } from "../../lib/table.ts";
import { MOTO_URL } from "../support/moto.ts";

const T = Date.parse("2026-12-06T12:00:00Z");

async function table(): Promise<{ ddb: DynamoDBDocumentClient; name: string }> {
  const client = new DynamoDBClient({
    endpoint: MOTO_URL,
    region: "us-east-1",
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
  });
  const name = `lease-${crypto.randomUUID().slice(0, 8)}-ci-table`;
  await client.send(new CreateTableCommand(tableDefinition(name)));
  return { ddb: DynamoDBDocumentClient.from(client), name };
}

/** A lease whose clock the test moves. */
function contender(ddb: DynamoDBDocumentClient, name: string, holder: string, at: number) {
  const clock = { now: at };
  const lease = new Lease(ddb, name, holder, 90, () => new Date(clock.now));
  return { lease, clock };
}

Deno.test("lease: one holder at a time; only the holder renews; a released lease is free at once", async () => {
  const { ddb, name } = await table();
  const a = contender(ddb, name, "a", T);
  const b = contender(ddb, name, "b", T);
  const first = await a.lease.take();
  assert.ok(first.held);
  assert.equal(first.lease.until, "2026-12-06T12:01:30Z");
  const refused = await b.lease.take();
  assert.deepEqual(refused.held ? "held" : [refused.by.holder, refused.by.until], [
    "a",
    "2026-12-06T12:01:30Z",
  ]);
  assert.equal(await b.lease.renew(), false, "b holds nothing to renew");
  a.clock.now = T + 60_000;
  assert.equal(await a.lease.renew(), true);
  assert.equal((await b.lease.read())?.until, "2026-12-06T12:02:30Z");
  await a.lease.release();
  assert.equal(await b.lease.read(), undefined);
  assert.ok((await b.lease.take()).held);
  assert.equal(await a.lease.renew(), false, "a released it");
});

Deno.test("lease: a holder that died loses it after its lease plus the skew allowance, and cannot take it back by renewing", async () => {
  const { ddb, name } = await table();
  const dead = contender(ddb, name, "dead", T);
  assert.ok((await dead.lease.take()).held);
  const standby = contender(ddb, name, "standby", T);
  // Until 12:01:30, plus the allowance: not before 12:02:00 by the standby's clock.
  assert.equal(skewAllowanceSec(90), 30);
  assert.equal(skewAllowanceSec(10), 5, "half a short lease");
  standby.clock.now = T + (90 + skewAllowanceSec(90)) * 1000;
  assert.equal((await standby.lease.take()).held, false);
  standby.clock.now += 1000;
  assert.ok((await standby.lease.take()).held);
  dead.clock.now = T + 200_000;
  assert.equal(await dead.lease.renew(), false, "its token is gone");
  assert.equal((await standby.lease.read())?.holder, "standby");
});

Deno.test("lease: clocks that disagree by less than the allowance never let two runs hold it", async () => {
  const { ddb, name } = await table();
  const slow = contender(ddb, name, "slow", T);
  const fast = contender(ddb, name, "fast", T + 25_000); // 25 s ahead
  assert.ok((await slow.lease.take()).held);
  // The holder renews every 30 s by its clock; the fast one tries every 5 s by its own.
  for (let s = 0; s <= 600; s += 5) {
    slow.clock.now = T + s * 1000;
    fast.clock.now = T + 25_000 + s * 1000;
    if (s % 30 === 0) assert.equal(await slow.lease.renew(), true, `renewal at ${s} s`);
    assert.equal((await fast.lease.take()).held, false, `taken from a live holder at ${s} s`);
  }
});
