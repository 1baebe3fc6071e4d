/**
 * One reconciler at a time: the lease on the pool, an item in a partition of its own
 * (`TYPE#REFRESH / ID#lease`, which fleet-actions' provision and release never read), holding who
 * has it (`holder`), until when (`until`, by the holder's clock) and a `token` that changes with
 * every taking and renewal.
 *
 * Every write is conditional, so two runs never both hold it: a run takes the lease when there is
 * none, when it is its own, or when the holder's `until` lies more than the skew allowance (half
 * the lease, at most 30 s) in the past by the taker's clock (a holder that died, SIGKILL
 * included, loses it within its lease time plus that allowance: 80 + 30 s by default
 * (`--lease-sec`), under 2 minutes); a renewal succeeds
 * only while the token is the one it last wrote. A holder whose renewal fails has lost the lease
 * and stops reconciling after the work in flight. Clocks that disagree by less than the allowance
 * never let two runs hold it at once.
 *
 * Writes: PutItem (take), UpdateItem (renew), DeleteItem (release), all on the lease item only.
 *
 * @module
 */
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { ConditionalCheckFailedException } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { timestamp } from "../contract.ts";

/** The lease's item: refresh's own partition (see the data contract). */
export const LEASE_KEY = { PK: "TYPE#REFRESH", SK: "ID#lease" } as const;

/**
 * How long past a holder's `until` (by the taker's clock) the lease is still left to it: half the
 * lease, at most 30 s (the clocks' disagreement it tolerates).
 */
export function skewAllowanceSec(leaseSec: number): number {
  return Math.min(30, Math.floor(leaseSec / 2));
}

/** Who holds the lease, until when (ISO-8601 UTC by the holder's clock). */
export interface LeaseHolder {
  holder: string;
  until: string;
  token: string;
}

/** The outcome of an attempt to take (or keep) the lease. */
export type LeaseAttempt =
  | { held: true; lease: LeaseHolder }
  | { held: false; by: LeaseHolder };

/** The lease of one run: take it, renew it while working, release it at the end. */
export class Lease {
  #current: LeaseHolder | undefined;

  constructor(
    private readonly ddb: DynamoDBDocumentClient,
    private readonly table: string,
    /** This run's name, as others see it (host, process, a random part). */
    readonly holder: string,
    /** Seconds a taking or renewal holds the lease. */
    readonly seconds: number,
    private readonly now: () => Date,
  ) {}

  /** The lease as this run last wrote it, if it holds it. */
  get current(): LeaseHolder | undefined {
    return this.#current;
  }

  /** Takes the lease, unless another live run holds it (then says who, until when). */
  async take(): Promise<LeaseAttempt> {
    const now = this.now();
    const stale = timestamp(new Date(now.getTime() - skewAllowanceSec(this.seconds) * 1000));
    const lease = await this.#put(now, {
      expression: "attribute_not_exists(PK) OR #v.holder = :me OR #v.#u < :stale",
      names: { "#u": "until" },
      values: { ":me": this.holder, ":stale": stale },
    });
    if (lease) return { held: true, lease };
    const by = await this.read();
    // Gone between the write and the read: nobody holds it now; the next attempt takes it.
    return { held: false, by: by ?? { holder: "(released)", until: timestamp(now), token: "" } };
  }

  /** Renews the lease this run holds; false when it has lost it (another took it). */
  async renew(): Promise<boolean> {
    const held = this.#current;
    if (!held) return false;
    const lease = await this.#put(this.now(), {
      expression: "#v.#t = :token",
      names: { "#t": "token" },
      values: { ":token": held.token },
    });
    return lease !== undefined;
  }

  /**
   * Writes a new lease (a new token, `until` the lease's length from now) under `condition`;
   * it becomes this run's, or, when the condition fails, this run holds none.
   */
  async #put(
    now: Date,
    condition: {
      expression: string;
      names: Record<string, string>;
      values: Record<string, string>;
    },
  ): Promise<LeaseHolder | undefined> {
    const lease = this.#next(now);
    try {
      await this.ddb.send(
        new PutCommand({
          TableName: this.table,
          Item: this.#item(lease, now),
          ConditionExpression: condition.expression,
          ExpressionAttributeNames: { "#v": "value", ...condition.names },
          ExpressionAttributeValues: condition.values,
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      this.#current = undefined;
      return undefined;
    }
    this.#current = lease;
    return lease;
  }

  /** Gives the lease up (only if still this run's), so a standby takes it at once. */
  async release(): Promise<void> {
    const held = this.#current;
    this.#current = undefined;
    if (!held) return;
    try {
      await this.ddb.send(
        new DeleteCommand({
          TableName: this.table,
          Key: LEASE_KEY,
          ConditionExpression: "#v.#t = :token",
          ExpressionAttributeNames: { "#v": "value", "#t": "token" },
          ExpressionAttributeValues: { ":token": held.token },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }
  }

  /** Who holds the lease now, by the item (undefined: nobody). */
  async read(): Promise<LeaseHolder | undefined> {
    const out = await this.ddb.send(
      new GetCommand({ TableName: this.table, Key: LEASE_KEY, ConsistentRead: true }),
    );
    const value = out.Item?.value as Partial<LeaseHolder> | undefined;
    if (typeof value?.holder !== "string" || typeof value.until !== "string") return undefined;
    return { holder: value.holder, until: value.until, token: String(value.token ?? "") };
  }

  #next(now: Date): LeaseHolder {
    return {
      holder: this.holder,
      until: timestamp(new Date(now.getTime() + this.seconds * 1000)),
      token: crypto.randomUUID(),
    };
  }

  #item(lease: LeaseHolder, now: Date) {
    return {
      ...LEASE_KEY,
      entityType: "REFRESH",
      identifier: "lease",
      updatedAt: timestamp(now),
      value: lease,
    };
  }
}
