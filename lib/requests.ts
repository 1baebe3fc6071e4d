/**
 * Bounds every request refresh sends, so a silent endpoint fails a task instead of hanging the run:
 * the AWS SDK's request handler options (a timeout per attempt) and a `fetch` for Octokit that
 * gives up on an attempt after the same time (and treats an answer that breaks off as an error).
 * The clients' own retries still apply, so a call fails after its attempts (AWS: 5, GitHub: 4)
 * have each timed out.
 *
 * A partition costs one call's budget, not the run's deadline: an {@link EndpointBreaker}, one per
 * run and shared by every client, marks an endpoint (scheme, host and port) down once a call to it
 * has timed out on its last attempt. From then on every request to that endpoint fails at once,
 * without being sent, with an error named {@link ENDPOINT_DOWN} that says which endpoint did not
 * answer which call (lib/task.ts reports a task failing with it as skipped), and the attempts
 * already in flight to it are aborted. Other endpoints are unaffected. With the defaults the worst
 * case is {@link awsCallBudgetMs} (about 103 s) after the first call to the silent endpoint.
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
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import { describeDuration, ENDPOINT_DOWN } from "./task.ts";

export { ENDPOINT_DOWN };

/** How many times the AWS SDK tries a call (the first attempt included). */
export const AWS_MAX_ATTEMPTS = 5;

/** How many times Octokit tries a call (`@octokit/plugin-retry`'s 3 retries, and the first). */
export const GITHUB_MAX_ATTEMPTS = 4;

/**
 * The longest an AWS call can take when its endpoint never answers: every attempt times out, with
 * the SDK's standard retry backoff between attempts (at most 100 ms x 2^attempt, so 0.2 + 0.4 +
 * 0.8 + 1.6 s for 5 attempts). With the default 20 s timeout: 103 s.
 */
export function awsCallBudgetMs(timeoutMs: number, attempts = AWS_MAX_ATTEMPTS): number {
  let backoff = 0;
  for (let retry = 1; retry < attempts; retry++) backoff += Math.min(20_000, 100 * 2 ** retry);
  return attempts * timeoutMs + backoff;
}

/**
 * The longest a GitHub call can take when GitHub never answers: every attempt times out, with
 * `@octokit/plugin-retry`'s waits between them (`retryBaseMs` x retry², 1 + 4 + 9 s by default).
 * With the default 20 s timeout: 94 s.
 */
export function githubCallBudgetMs(
  timeoutMs: number,
  retryBaseMs = 1_000,
  attempts = GITHUB_MAX_ATTEMPTS,
): number {
  let waits = 0;
  for (let retry = 1; retry < attempts; retry++) waits += retryBaseMs * retry ** 2;
  return attempts * timeoutMs + waits;
}

/** Why an endpoint was marked down: the call that timed out on its last attempt. */
export interface EndpointFailure {
  /** `scheme://host:port` */
  endpoint: string;
  /** The call, e.g. `DynamoDB.UpdateItem` or `GitHub POST /repos/…/registration-token`. */
  call: string;
  timeoutMs: number;
  attempts: number;
}

/**
 * The run's record of endpoints that stopped answering (see the module comment). Every client of
 * a run shares one; each request asks {@link check} before it is sent and listens to
 * {@link signal} while it is in flight.
 */
export class EndpointBreaker {
  #down = new Map<string, EndpointFailure>();
  #aborts = new Map<string, AbortController>();

  /** Marks `failure.endpoint` down (the first failure is kept) and aborts requests in flight. */
  trip(failure: EndpointFailure): void {
    if (this.#down.has(failure.endpoint)) return;
    this.#down.set(failure.endpoint, failure);
    this.#aborts.get(failure.endpoint)?.abort();
  }

  /** The failure that marked `endpoint` down, if any. */
  failure(endpoint: string): EndpointFailure | undefined {
    return this.#down.get(endpoint);
  }

  /** Every endpoint marked down, in the order they were. */
  failures(): EndpointFailure[] {
    return [...this.#down.values()];
  }

  /** Aborted when `endpoint` is marked down. */
  signal(endpoint: string): AbortSignal {
    let controller = this.#aborts.get(endpoint);
    if (!controller) {
      controller = new AbortController();
      this.#aborts.set(endpoint, controller);
      if (this.#down.has(endpoint)) controller.abort();
    }
    return controller.signal;
  }

  /** Throws the {@link ENDPOINT_DOWN} error for `call` when `endpoint` is down. */
  check(endpoint: string, call: string): void {
    const failure = this.#down.get(endpoint);
    if (failure) throw endpointDown(failure, call);
  }
}

/**
 * The error of a call to an endpoint already marked down: it names the endpoint and the call that
 * found it silent, with the limits that applied.
 */
export function endpointDown(failure: EndpointFailure, call: string): Error {
  const { endpoint, timeoutMs, attempts } = failure;
  const earlier = failure.call === call ? "an earlier one" : failure.call;
  return Object.assign(
    new Error(
      `${call} not sent: ${endpoint} did not answer ${earlier} within ${
        describeDuration(timeoutMs)
      } on any of ${attempts} attempt${attempts === 1 ? "" : "s"} earlier in this run ` +
        "(--request-timeout-sec); check that the endpoint is reachable from here",
    ),
    { name: ENDPOINT_DOWN, endpoint },
  );
}

/** `scheme://host[:port]` of a URL, the unit an {@link EndpointBreaker} counts. */
export function endpointOf(url: string | URL): string {
  return new URL(url).origin;
}

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

/** The part of the SDK's request handler (a `NodeHttpHandler` under Deno) used here. */
interface HttpHandler {
  handle(
    request: { protocol: string; hostname: string; port?: number },
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

/** An object whose methods call `inner`'s (a class instance's methods are on its prototype). */
function delegates(inner: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let o = inner; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === "constructor" || key in out) continue;
      const value = (inner as Record<string, unknown>)[key];
      out[key] = typeof value === "function" ? value.bind(inner) : value;
    }
  }
  return out;
}

/** A timeout error the request handler threw, stamped with the endpoint that did not answer. */
type TimeoutLike = { name?: string; $metadata?: { attempts?: number }; $endpoint?: string };

/**
 * Guards an AWS client's requests: rewrites the SDK's timeout error, once every attempt has
 * failed, into one that says which call timed out at which endpoint, after how long and how many
 * attempts, and which input sets the limit; and, with a `breaker`, marks that endpoint down then,
 * fails every later request to it at once and aborts those in flight (see the module comment).
 */
export function explainAwsTimeouts(
  client: AwsClient,
  service: string,
  timeoutMs: number,
  breaker?: EndpointBreaker,
): void {
  if (breaker) guardRequestHandler(client, breaker);
  (client.middlewareStack as EC2Client["middlewareStack"]).add(
    (next, context) => async (args) => {
      const operation = `${service}.${(context.commandName ?? "Unknown").replace(/Command$/, "")}`;
      try {
        return await next(args);
      } catch (error) {
        const e = error as TimeoutLike & { endpoint?: string };
        if (e?.name === ENDPOINT_DOWN && breaker && e.endpoint) {
          throw endpointDown(breaker.failure(e.endpoint)!, operation);
        }
        if (e?.name !== "TimeoutError") throw error;
        const attempts = e.$metadata?.attempts ?? AWS_MAX_ATTEMPTS;
        const endpoint = e.$endpoint;
        if (endpoint) breaker?.trip({ endpoint, call: operation, timeoutMs, attempts });
        throw Object.assign(
          new Error(
            `${operation} got no answer${endpoint ? ` from ${endpoint}` : ""} within ${
              describeDuration(timeoutMs)
            } (${attempts} attempt${attempts === 1 ? "" : "s"}; --request-timeout-sec); ` +
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
 * Wraps the client's request handler (read by the SDK at every attempt, below its retries): an
 * attempt to an endpoint marked down fails at once without being sent, one in flight when it is
 * marked down is aborted, and a timed-out attempt carries its endpoint up to the middleware above.
 * The error thrown for a down endpoint is not one the SDK retries (neither it nor its cause is a
 * timeout, throttling or network error).
 */
function guardRequestHandler(client: AwsClient, breaker: EndpointBreaker): void {
  const config = client.config as unknown as { requestHandler: HttpHandler };
  const inner = config.requestHandler;
  const down = (endpoint: string) =>
    Object.assign(new Error(`${endpoint} is down`), { name: ENDPOINT_DOWN, endpoint });
  const guarded: HttpHandler = {
    // The handler's other members (configuration, destroy) are the inner handler's.
    ...delegates(inner),
    handle: async (request, options = {}) => {
      const port = request.port ? `:${request.port}` : "";
      const endpoint = endpointOf(`${request.protocol}//${request.hostname}${port}`);
      if (breaker.failure(endpoint)) throw down(endpoint);
      const stop = breaker.signal(endpoint);
      const abortSignal = options.abortSignal ? AbortSignal.any([options.abortSignal, stop]) : stop;
      try {
        return await inner.handle(request, { ...options, abortSignal });
      } catch (error) {
        if (breaker.failure(endpoint)) throw down(endpoint);
        const e = error as TimeoutLike;
        if (e?.name === "TimeoutError") {
          Object.defineProperty(e, "$endpoint", { value: endpoint, enumerable: false });
        }
        throw error;
      }
    },
  };
  config.requestHandler = guarded;
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
      throw Object.assign(
        new Error(
          `${request} got no answer within ${describeDuration(timeoutMs)} (--request-timeout-sec)`,
          { cause: error },
        ),
        { name: "TimeoutError" },
      );
    }
  };
}

/** The part of an Octokit request's options read here. */
interface GithubRequestOptions {
  method?: string;
  url?: string;
  baseUrl?: string;
  request?: { signal?: AbortSignal };
}

function githubEndpoint(options: GithubRequestOptions): string {
  const url = options.url ?? "";
  return endpointOf(/^https?:\/\//.test(url) ? url : options.baseUrl ?? "https://api.github.com");
}

function githubCall(options: GithubRequestOptions): string {
  const url = options.url ?? "";
  const path = /^https?:\/\//.test(url) ? new URL(url).pathname : url.split("?")[0];
  return `GitHub ${options.method ?? "GET"} ${path}`;
}

/**
 * An Octokit plugin, to be given before `@octokit/plugin-retry` so it wraps each attempt: an
 * attempt to a GitHub endpoint marked down fails at once without being sent, one in flight when it
 * is marked down is aborted. Its error has no status, so plugin-retry does not retry it.
 */
export function githubBreakerPlugin(
  breaker: EndpointBreaker,
): (octokit: Pick<Octokit, "hook">) => object {
  return (octokit) => {
    octokit.hook.wrap("request", async (request, requestOptions) => {
      const options = requestOptions as GithubRequestOptions;
      const endpoint = githubEndpoint(options);
      const down = () => {
        const failure = breaker.failure(endpoint);
        // `request: {}` tells plugin-retry this is not an HTTP answer to retry.
        return failure &&
          Object.assign(endpointDown(failure, githubCall(options)), { request: {} });
      };
      const early = down();
      if (early) throw early;
      const stop = breaker.signal(endpoint);
      const signal = options.request?.signal;
      options.request = {
        ...options.request,
        signal: signal ? AbortSignal.any([signal, stop]) : stop,
      };
      try {
        return await request(requestOptions);
      } catch (error) {
        throw down() ?? error;
      }
    });
    return {};
  };
}

/**
 * Marks a GitHub endpoint down once one of `octokit`'s calls to it has timed out on its last
 * attempt (call it on the built client, so it wraps the retries).
 */
export function tripOnGithubTimeouts(
  octokit: Pick<Octokit, "hook">,
  breaker: EndpointBreaker,
  timeoutMs: number,
): void {
  octokit.hook.wrap("request", async (request, requestOptions) => {
    const options = requestOptions as GithubRequestOptions;
    try {
      return await request(requestOptions);
    } catch (error) {
      if (causedByTimeout(error)) {
        breaker.trip({
          endpoint: githubEndpoint(options),
          call: githubCall(options),
          timeoutMs,
          attempts: GITHUB_MAX_ATTEMPTS,
        });
      }
      throw error;
    }
  });
}

/** Whether `error` or one of its causes is a timeout (as {@link timedFetch} throws). */
function causedByTimeout(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; depth++) {
    if ((e as { name?: string }).name === "TimeoutError") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
