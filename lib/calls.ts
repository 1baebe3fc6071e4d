/**
 * Counts the API calls clients make, by operation (`DynamoDB.PutItem`, `GitHub.POST /repos/…`), so
 * runs can report them and tests can prove a second run writes nothing.
 *
 * @module
 */
import type { CloudWatchClient } from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import type { DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import type { Octokit } from "npm:@octokit/rest@22.0.1";

/** Operation name prefixes that change state. */
const WRITE =
  /^(Create|Put|Update|Delete|Set|Terminate|Modify|BatchWrite|Tag|Untag|Run|Purge|Send|POST|PUT|PATCH|DELETE)/;

/** Whether an operation (`Service.Operation` or `GitHub.METHOD path`) writes. */
export function isWrite(operation: string): boolean {
  return WRITE.test(operation.slice(operation.indexOf(".") + 1));
}

/** Calls by operation. */
export class CallCounter {
  readonly counts = new Map<string, number>();
  /** GitHub's `x-ratelimit-remaining` on its last answer, when one came. */
  githubRateLimitRemaining: number | undefined;

  add(operation: string): void {
    this.counts.set(operation, (this.counts.get(operation) ?? 0) + 1);
  }

  /** Total calls, or calls matching a filter. */
  total(filter: (operation: string) => boolean = () => true): number {
    let n = 0;
    for (const [op, count] of this.counts) if (filter(op)) n += count;
    return n;
  }

  writes(): number {
    return this.total(isWrite);
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort(([a], [b]) => a.localeCompare(b)));
  }

  reset(): void {
    this.counts.clear();
  }
}

type AwsClient = EC2Client | SQSClient | DynamoDBClient | CloudWatchClient;

/** Counts every command an AWS SDK v3 client sends, as `<service>.<Operation>`. */
export function countAwsCalls(client: AwsClient, service: string, counter: CallCounter): void {
  (client.middlewareStack as EC2Client["middlewareStack"]).add(
    (next, context) => (args) => {
      counter.add(`${service}.${(context.commandName ?? "Unknown").replace(/Command$/, "")}`);
      return next(args);
    },
    { step: "initialize", name: `refreshCallCounter${service}`, override: true },
  );
}

/** Counts every request an Octokit client sends, as `GitHub.<METHOD> <route>`. */
export function countGithubCalls(octokit: Octokit, counter: CallCounter): void {
  octokit.hook.wrap("request", async (request, options) => {
    counter.add(`GitHub.${options.method} ${options.url}`);
    const response = await request(options);
    const remaining = Number(response.headers?.["x-ratelimit-remaining"]);
    if (Number.isFinite(remaining)) counter.githubRateLimitRemaining = remaining;
    return response;
  });
}
