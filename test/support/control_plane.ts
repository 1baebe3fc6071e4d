/**
 * A test control plane that plays fleet-actions' `provision` and `release` against one pool
 * table, exactly as shared/PROTOCOL.md describes them, so the generated bootstrap can be run
 * against its real counterpart:
 *
 * - {@link ControlPlane.provision}: writes the instance record (`state=created`, `runId`,
 *   `threshold=now+10 min`, `resourceClass`, `instanceType`, `usageClass`), then waits (about
 *   180 s) for `UD_REG_OK` with that run id and a fresh heartbeat (at most 15 s old); any
 *   `*_FAILED` signal for the run id fails it. Success moves the record to `running`.
 * - {@link ControlPlane.claim}: conditional `idle -> claimed`, `runId "" -> <run id>`, threshold
 *   5 min ahead, only while unexpired; checks the heartbeat once (15 s, else the instance is
 *   expired and the claim fails); waits about 10 s for `UD_REG_OK` with the new run id.
 * - {@link ControlPlane.release}: conditional `running -> idle`, `runId <run id> -> ""`, threshold
 *   `now + idle time`; waits up to about 120 s for `UD_REMOVE_REG_REMOVE_RUN_OK` with the old run
 *   id; if it never comes, expires the instance (threshold in the past).
 *
 * Waits poll the worker signal item (default every 200 ms, finer than fleet-actions does, so the
 * times measured are the instance's) and keep every distinct signal seen in {@link ControlPlane.seen}.
 * Timestamps are written as the table contract says: UTC without fractional seconds.
 */
import {
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  UpdateCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";

export const FAILED_SIGNALS = [
  "UD_FAILED",
  "UD_REG_FAILED",
  "UD_REMOVE_REG_FAILED",
  "UD_REMOVE_REG_REMOVE_RUN_FAILED",
] as const;

export interface Signal {
  state: string;
  runId: string;
  updatedAt: string;
}

/** How a provision, claim or release went. */
export type Outcome =
  | { ok: true; elapsedMs: number }
  | { ok: false; elapsedMs: number; reason: string; signal?: Signal };

export interface ControlPlaneOptions {
  ddb: DynamoDBDocumentClient;
  table: string;
  /** Signal poll period (default 200 ms). */
  pollMs?: number;
}

/** ISO-8601 UTC without fractional seconds, as the table contract wants. */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export class ControlPlane {
  readonly ddb: DynamoDBDocumentClient;
  readonly table: string;
  readonly pollMs: number;
  /** Every distinct worker signal seen per instance, in order. */
  readonly seen = new Map<string, Signal[]>();

  constructor(options: ControlPlaneOptions) {
    this.ddb = options.ddb;
    this.table = options.table;
    this.pollMs = options.pollMs ?? 200;
  }

  /** Writes the registration token record the instances read (`value.token`). */
  async putRegistrationToken(token: string, now = new Date()): Promise<void> {
    await this.ddb.send(
      new PutCommand({
        TableName: this.table,
        Item: {
          PK: "TYPE#METADATA",
          SK: "ID#gh_registration_token",
          entityType: "METADATA",
          identifier: "gh_registration_token",
          value: {
            token,
            timestamp: isoSeconds(now),
            expires_at: isoSeconds(new Date(now.getTime() + 3600_000)),
          },
          updatedAt: isoSeconds(now),
        },
      }),
    );
  }

  /** provision: record `created`, then wait for `UD_REG_OK` and a fresh heartbeat. */
  async provision(instanceId: string, runId: string, options: {
    timeoutMs?: number;
    resourceClass?: string;
    instanceType?: string;
    usageClass?: string;
  } = {}): Promise<Outcome> {
    const started = Date.now();
    await this.putRecord(instanceId, {
      state: "created",
      runId,
      thresholdMs: 10 * 60_000,
      resourceClass: options.resourceClass ?? "large",
      instanceType: options.instanceType ?? "c6i.large",
      usageClass: options.usageClass ?? "on-demand",
      onlyNew: true,
    });
    const outcome = await this.waitForSignal(instanceId, runId, "UD_REG_OK", {
      timeoutMs: options.timeoutMs ?? 180_000,
      heartbeat: true,
      started,
    });
    if (outcome.ok) {
      await this.transition(instanceId, {
        from: "created",
        to: "running",
        runIdFrom: runId,
        runIdTo: runId,
        threshold: new Date(Date.now() + 60 * 60_000),
      });
    }
    return outcome;
  }

  /**
   * Puts an instance in the pool as a warm pool does: its record `idle`, no run id, threshold
   * `idleTimeSec` ahead (default 420).
   */
  async pool(instanceId: string, options: { idleTimeSec?: number } = {}): Promise<void> {
    await this.putRecord(instanceId, {
      state: "idle",
      runId: "",
      thresholdMs: (options.idleTimeSec ?? 420) * 1000,
    });
  }

  /** Writes an instance record as provision and the warm pool write it (threshold from now). */
  private async putRecord(instanceId: string, record: {
    state: string;
    runId: string;
    thresholdMs: number;
    resourceClass?: string;
    instanceType?: string;
    usageClass?: string;
    /** Only when there is no record yet (provision's condition). */
    onlyNew?: boolean;
  }): Promise<void> {
    const now = new Date();
    await this.ddb.send(
      new PutCommand({
        TableName: this.table,
        Item: {
          PK: "TYPE#INSTANCE",
          SK: `ID#${instanceId}`,
          entityType: "INSTANCE",
          identifier: instanceId,
          state: record.state,
          runId: record.runId,
          threshold: isoSeconds(new Date(now.getTime() + record.thresholdMs)),
          resourceClass: record.resourceClass ?? "large",
          instanceType: record.instanceType ?? "c6i.large",
          usageClass: record.usageClass ?? "on-demand",
          updatedAt: isoSeconds(now),
        },
        ...(record.onlyNew ? { ConditionExpression: "attribute_not_exists(PK)" } : {}),
      }),
    );
  }

  /** claim from the pool: `idle -> claimed` with a new run id, heartbeat check, `UD_REG_OK`. */
  async claim(
    instanceId: string,
    runId: string,
    options: { timeoutMs?: number } = {},
  ): Promise<Outcome> {
    const started = Date.now();
    const claimed = await this.transition(instanceId, {
      from: "idle",
      to: "claimed",
      runIdFrom: "",
      runIdTo: runId,
      threshold: new Date(Date.now() + 5 * 60_000),
    });
    if (!claimed) {
      return { ok: false, elapsedMs: Date.now() - started, reason: "the claim's condition failed" };
    }
    const age = await this.heartbeatAgeMs(instanceId);
    if (age === undefined || age > 15_000) {
      await this.expire(instanceId);
      return {
        ok: false,
        elapsedMs: Date.now() - started,
        reason: `heartbeat ${age === undefined ? "missing" : `${age} ms old`}: instance expired`,
      };
    }
    const outcome = await this.waitForSignal(instanceId, runId, "UD_REG_OK", {
      timeoutMs: options.timeoutMs ?? 10_000,
      heartbeat: false,
      started,
    });
    if (outcome.ok) {
      await this.transition(instanceId, {
        from: "claimed",
        to: "running",
        runIdFrom: runId,
        runIdTo: runId,
        threshold: new Date(Date.now() + 60 * 60_000),
      });
    }
    return outcome;
  }

  /** release: `running -> idle`, run id cleared, then `UD_REMOVE_REG_REMOVE_RUN_OK` or expiry. */
  async release(instanceId: string, runId: string, options: {
    idleTimeSec?: number;
    timeoutMs?: number;
  } = {}): Promise<Outcome> {
    const started = Date.now();
    const released = await this.transition(instanceId, {
      from: "running",
      to: "idle",
      runIdFrom: runId,
      runIdTo: "",
      threshold: new Date(Date.now() + (options.idleTimeSec ?? 420) * 1000),
    });
    if (!released) {
      return {
        ok: false,
        elapsedMs: Date.now() - started,
        reason: "the release's condition failed",
      };
    }
    const outcome = await this.waitForSignal(instanceId, runId, "UD_REMOVE_REG_REMOVE_RUN_OK", {
      timeoutMs: options.timeoutMs ?? 120_000,
      heartbeat: false,
      started,
    });
    if (!outcome.ok) await this.expire(instanceId);
    return outcome;
  }

  /** Puts the record's threshold in the past (`at`, default a minute ago), as release does. */
  async expire(instanceId: string, at = new Date(Date.now() - 60_000)): Promise<void> {
    await this.ddb.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { PK: "TYPE#INSTANCE", SK: `ID#${instanceId}` },
        UpdateExpression: "SET threshold = :t, updatedAt = :now",
        ExpressionAttributeValues: { ":t": isoSeconds(at), ":now": isoSeconds(new Date()) },
      }),
    );
  }

  /** The instance record, as stored. */
  async record(instanceId: string): Promise<Record<string, unknown> | undefined> {
    return await this.get("INSTANCE", instanceId);
  }

  /** The worker signal item's value and time, if any. */
  async signal(instanceId: string): Promise<Signal | undefined> {
    const item = await this.get("WS", instanceId);
    if (!item) return undefined;
    const value = item.value as { state: string; runId: string };
    const signal = { state: value.state, runId: value.runId, updatedAt: item.updatedAt as string };
    const seen = this.seen.get(instanceId) ?? [];
    const last = seen.at(-1);
    if (
      !last || last.state !== signal.state || last.runId !== signal.runId ||
      last.updatedAt !== signal.updatedAt
    ) {
      seen.push(signal);
    }
    this.seen.set(instanceId, seen);
    return signal;
  }

  /** The heartbeat item, as stored. */
  async heartbeat(instanceId: string): Promise<Record<string, unknown> | undefined> {
    return await this.get("HEARTBEAT", instanceId);
  }

  /** Age of the heartbeat from its `updatedAt` (second precision), undefined when missing. */
  async heartbeatAgeMs(instanceId: string): Promise<number | undefined> {
    const item = await this.heartbeat(instanceId);
    if (!item) return undefined;
    return Date.now() - new Date(item.updatedAt as string).getTime();
  }

  private async get(entity: string, id: string): Promise<Record<string, unknown> | undefined> {
    const { Item } = await this.ddb.send(
      new GetCommand({
        TableName: this.table,
        Key: { PK: `TYPE#${entity}`, SK: `ID#${id}` },
        ConsistentRead: true,
      }),
    );
    return Item;
  }

  /** The protocol's conditional state transition; false when its condition failed. */
  private async transition(instanceId: string, t: {
    from: string;
    to: string;
    runIdFrom: string;
    runIdTo: string;
    threshold: Date;
  }): Promise<boolean> {
    const now = isoSeconds(new Date());
    try {
      await this.ddb.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { PK: "TYPE#INSTANCE", SK: `ID#${instanceId}` },
          ConditionExpression: "#state = :from AND #threshold > :now AND #runId = :runIdFrom",
          UpdateExpression:
            "SET #state = :to, #threshold = :threshold, #runId = :runIdTo, updatedAt = :now",
          ExpressionAttributeNames: {
            "#state": "state",
            "#threshold": "threshold",
            "#runId": "runId",
          },
          ExpressionAttributeValues: {
            ":from": t.from,
            ":to": t.to,
            ":runIdFrom": t.runIdFrom,
            ":runIdTo": t.runIdTo,
            ":threshold": isoSeconds(t.threshold),
            ":now": now,
          },
        }),
      );
      return true;
    } catch (error) {
      if ((error as Error).name === "ConditionalCheckFailedException") return false;
      throw error;
    }
  }

  private async waitForSignal(instanceId: string, runId: string, wanted: string, options: {
    timeoutMs: number;
    heartbeat: boolean;
    started: number;
  }): Promise<Outcome> {
    const deadline = Date.now() + options.timeoutMs;
    let last: Signal | undefined;
    while (true) {
      last = await this.signal(instanceId);
      if (last && last.runId === runId) {
        if ((FAILED_SIGNALS as readonly string[]).includes(last.state)) {
          return {
            ok: false,
            elapsedMs: Date.now() - options.started,
            reason: `${last.state} for run ${runId}`,
            signal: last,
          };
        }
        if (last.state === wanted) {
          const age = options.heartbeat ? await this.heartbeatAgeMs(instanceId) : 0;
          if (age !== undefined && age <= 15_000) {
            return { ok: true, elapsedMs: Date.now() - options.started };
          }
        }
      }
      if (Date.now() >= deadline) {
        return {
          ok: false,
          elapsedMs: Date.now() - options.started,
          reason: `timed out after ${options.timeoutMs} ms waiting for ${wanted} for run ${runId}` +
            ` (last signal ${last ? `${last.state} for run ${last.runId}` : "none"})`,
          signal: last,
        };
      }
      await new Promise((resolve) => setTimeout(resolve, this.pollMs));
    }
  }
}

/**
 * fleet-actions' provision's verdict on a pool message (PoolPickUpManager.classifyMessage, read
 * from its source): `delete` when the class is unknown, cpu differs from the class's, mmem is
 * lower, the threshold has passed or the usage class is missing; `requeue` when the instance type
 * matches none of `allowedInstanceTypes` (`*` any run of characters, case-insensitive) or the
 * usage class is not `usageClass`; else `ok`.
 */
export function classifyPoolMessage(
  message: Record<string, unknown>,
  config: Record<string, { cpu: number; mmem: number }>,
  asked: { usageClass: string; allowedInstanceTypes: string[] },
  now = new Date(),
): { status: "ok" | "delete" | "requeue"; reason: string } {
  const rc = config[String(message.resourceClass)];
  if (!rc) return { status: "delete", reason: `invalid resource class ${message.resourceClass}` };
  if (message.cpu !== rc.cpu) {
    return { status: "delete", reason: `cpu ${message.cpu} is not the spec's ${rc.cpu}` };
  }
  if (Number(message.mmem) < rc.mmem) {
    return { status: "delete", reason: `mmem ${message.mmem} is below the spec's ${rc.mmem}` };
  }
  if (new Date(String(message.threshold)) < now) {
    return { status: "delete", reason: `expired at ${message.threshold}` };
  }
  const type = String(message.instanceType);
  const allowed = asked.allowedInstanceTypes.some((pattern) =>
    new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`, "i")
      .test(type)
  );
  if (!allowed) {
    return {
      status: "requeue",
      reason: `instance type ${type} does not match ${asked.allowedInstanceTypes.join(",")}`,
    };
  }
  if (!message.usageClass) return { status: "delete", reason: "no usage class" };
  if (message.usageClass !== asked.usageClass) {
    return {
      status: "requeue",
      reason: `usage class ${message.usageClass} is not ${asked.usageClass}`,
    };
  }
  return { status: "ok", reason: "" };
}
