/**
 * Bounds every request refresh sends, so a silent endpoint fails a task instead of hanging the run:
 * the AWS SDK's request handler options (a timeout per attempt) and a `fetch` for Octokit that
 * gives up on an attempt after the same time (and treats an answer that breaks off as an error).
 * The clients' own retries still apply, so a call fails after its attempts (AWS: 5, GitHub: 4)
 * have each timed out.
 *
 * Relied on (checked by test/requests_test.ts against a stalled server): the SDK's
 * `NodeHttpHandler` (what @aws-sdk runs under Deno) only logs a warning when `requestTimeout`
 * passes unless `throwOnRequestTimeout` is true; `socketTimeout` bounds a silence after the answer
 * began; `connectionTimeout` bounds the TCP connect. A timed-out attempt is a `TimeoutError`, which
 * the SDK retries. `@octokit/request` turns a rejected `fetch` that is not an `AbortError` into a
 * `RequestError` with status 500, which `@octokit/plugin-retry` retries.
 *
 * @module
 */
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import type { DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { describeDuration } from "./task.ts";

/** How many times the AWS SDK tries a call (the first attempt included). */
export const AWS_MAX_ATTEMPTS = 5;

/** The `requestHandler` options of an AWS SDK client: each attempt ends within `timeoutMs`. */
export function awsRequestHandler(timeoutMs: number) {
  return {
    requestTimeout: timeoutMs,
    throwOnRequestTimeout: true,
    socketTimeout: timeoutMs,
    connectionTimeout: Math.min(timeoutMs, 5_000),
  };
}

type AwsClient = EC2Client | SQSClient | DynamoDBClient;

/**
 * Rewrites the SDK's timeout error, once every attempt has failed, into one that says which call
 * timed out, after how long and how many attempts, and which input sets the limit.
 */
export function explainAwsTimeouts(client: AwsClient, service: string, timeoutMs: number): void {
  (client.middlewareStack as EC2Client["middlewareStack"]).add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (error) {
        const e = error as { name?: string; $metadata?: { attempts?: number } };
        if (e?.name !== "TimeoutError") throw error;
        const operation = `${service}.${
          (context.commandName ?? "Unknown").replace(/Command$/, "")
        }`;
        const attempts = e.$metadata?.attempts ?? AWS_MAX_ATTEMPTS;
        throw Object.assign(
          new Error(
            `${operation} got no answer within ${describeDuration(timeoutMs)} ` +
              `(${attempts} attempt${attempts === 1 ? "" : "s"}; --request-timeout-sec); ` +
              "check that the AWS endpoint is reachable from here",
            { cause: error },
          ),
          { name: "TimeoutError" },
        );
      }
    },
    { step: "initialize", name: `refreshTimeouts${service}`, override: true },
  );
}

/**
 * A `fetch` whose every call is aborted after `timeoutMs` (the answer's body included), failing
 * with a message naming the request and the limit. The body is read here, so an answer that
 * breaks off midway (a connection lost after the status line) is an error Octokit retries, not an
 * empty answer (`@octokit/request` reads a body that fails as nothing). Octokit takes it as
 * `request.fetch`.
 */
export function timedFetch(
  timeoutMs: number,
  fetcher: typeof fetch = globalThis.fetch,
): typeof fetch {
  return async (input, init) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const url = new URL(input instanceof Request ? input.url : String(input));
    const request = `${init?.method ?? "GET"} ${url.origin}${url.pathname}`;
    try {
      const response = await fetcher(input, { ...init, signal });
      const body = await response.arrayBuffer().catch((error) => {
        if (timeout.aborted) throw error;
        throw new Error(`${request}: the answer broke off (${(error as Error).message})`, {
          cause: error,
        });
      });
      const read = new Response(response.status === 204 || response.status === 304 ? null : body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
      return Object.defineProperty(read, "url", { value: response.url });
    } catch (error) {
      if (!timeout.aborted || init?.signal?.aborted) throw error;
      throw new Error(
        `${request} got no answer within ${describeDuration(timeoutMs)} (--request-timeout-sec)`,
        { cause: error },
      );
    }
  };
}
