import assert from "node:assert/strict";
import { CallCounter, isWrite } from "../lib/calls.ts";

Deno.test("isWrite tells writes from reads across services", () => {
  for (
    const op of [
      "DynamoDB.PutItem",
      "EC2.TerminateInstances",
      "SQS.SetQueueAttributes",
      "GitHub.POST /x",
    ]
  ) {
    assert.equal(isWrite(op), true, op);
  }
  for (
    const op of [
      "DynamoDB.GetItem",
      "DynamoDB.Query",
      "EC2.DescribeInstances",
      "SQS.ListQueues",
      "GitHub.GET /x",
    ]
  ) {
    assert.equal(isWrite(op), false, op);
  }
});

Deno.test("call counter totals by operation and sorts its JSON", () => {
  const c = new CallCounter();
  c.add("SQS.ListQueues");
  c.add("DynamoDB.PutItem");
  c.add("DynamoDB.PutItem");
  assert.equal(c.total(), 3);
  assert.equal(c.writes(), 2);
  assert.deepEqual(Object.keys(c.toJSON()), ["DynamoDB.PutItem", "SQS.ListQueues"]);
});
