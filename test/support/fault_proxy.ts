/**
 * A fault-injecting HTTP proxy for tests, on 127.0.0.1, in front of moto or the fake GitHub.
 *
 * It speaks HTTP/1.1 on raw TCP (so it can drop a connection, hold one open without answering,
 * or forward a request and then hang up without the reply) and forwards everything else to its
 * target unchanged. Each request is named like {@link CallCounter} names calls:
 * `EC2.TerminateInstances`, `DynamoDB.UpdateItem`, `SQS.CreateQueue` (from the SigV4 request's
 * `X-Amz-Target` header or `Action` form field), `GitHub.POST /repos/acme/widgets/...` (anything
 * not signed by AWS).
 *
 * Faults:
 * - `throttle`: the service's own throttling answer. EC2: HTTP 503 `RequestLimitExceeded` in
 *   EC2's XML error document (the status EC2 answers throttled calls with); DynamoDB: HTTP 400
 *   `ThrottlingException` or `ProvisionedThroughputExceededException` (JSON `__type`); SQS (JSON
 *   protocol, query-compatible): HTTP 400 `RequestThrottled` with `x-amzn-query-error`; GitHub: a
 *   primary rate limit (403, `x-ratelimit-remaining: 0`, `x-ratelimit-reset` a second away) or a
 *   secondary one (429, `retry-after: 1`).
 * - `error`: HTTP 500 in the service's dialect (`InternalError`, `InternalServerError`,
 *   `InternalFailure`, GitHub's "Server Error").
 * - `drop`: the connection is closed before the request reaches the target.
 * - `stall`: the request is never answered (the connection stays open until `stallMs` passes or
 *   the proxy closes); it never reaches the target.
 * - `lose-reply`: the request is forwarded and done by the target, then the connection is closed
 *   after the answer's head, without its body (the client cannot tell whether it happened; the
 *   SDK retries it as a network error).
 *
 * Faults come two ways. At random: each request matching `only` gets a fault with probability
 * `rate`, of a kind drawn from `faults`; the draw is a function of the seed, the operation and how
 * many requests of that operation came before, so a seed replays the same faults whatever the
 * interleaving of different operations. On purpose: {@link FaultProxy.inject} queues a fault for
 * the k-th next request matching an operation.
 *
 * Latency: `latencyMs` delays every request of a service (`EC2`, `SQS`, `DynamoDB`, `GitHub`)
 * before it is forwarded, as a distant endpoint would; requests on different connections wait side
 * by side, so calls in flight overlap as they do over the internet. {@link FaultProxy.timeline}
 * records when each answered request arrived and was answered (for calls-in-flight figures).
 *
 * Black hole: with `blackHole`, the proxy accepts every connection and never reads from it nor
 * answers, until it closes (an endpoint behind a partition that still completes the handshake).
 *
 * It can also answer what the emulator never does: {@link FaultProxy.rewrite} changes the target's
 * answer to a request (which the target did), {@link FaultProxy.respond} answers a request itself
 * (which the target never sees).
 *
 *     await using proxy = startFaultProxy({ target: MOTO_URL, seed: 7, rate: 0.2 });
 *     proxy.inject("DynamoDB.UpdateItem", "lose-reply", { after: 2 }); // the 3rd UpdateItem
 *     // point the SDK (AWS_ENDPOINT_URL) or --github-api-url at proxy.url ...
 *     assert(proxy.injected().length > 0, proxy.describe());
 */

/** What the proxy can do to one request; see the module comment. */
export type Fault = "throttle" | "error" | "drop" | "stall" | "lose-reply";

/** Every fault, in a fixed order (random draws index into `faults`). */
export const FAULTS: readonly Fault[] = ["throttle", "error", "drop", "stall", "lose-reply"];

export interface FaultProxyOptions {
  /** Base URL requests are forwarded to, e.g. MOTO_URL or a fake GitHub's url (its path kept). */
  target: string;
  /** Seed of the random faults (default 1). */
  seed?: number;
  /** Probability (0-1) that an eligible request gets a random fault (default 0: none). */
  rate?: number;
  /** Kinds of random fault, drawn uniformly (default every kind but `stall`). */
  faults?: readonly Fault[];
  /** Operations eligible for random faults (default all). */
  only?: RegExp;
  /** How long a stalled request holds its connection before it is closed (default: until close). */
  stallMs?: number;
  /** Milliseconds added before forwarding each request of a service (`EC2`, `DynamoDB`, ...). */
  latencyMs?: Record<string, number>;
  /** Accept connections, never read or answer (see the module comment). */
  blackHole?: boolean;
}

/** When one request arrived and when its answer was written, on `performance.now()`. */
export interface Timing {
  operation: string;
  start: number;
  end: number;
}

/** One request the proxy saw, and the fault it got (none when forwarded normally). */
export interface ProxiedRequest {
  operation: string;
  fault?: Fault | "rewrite" | "respond";
}

/** An HTTP answer as {@link FaultProxy.rewrite} and {@link FaultProxy.respond} see it. */
export interface ProxyAnswer {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
}

/** Where a queued rule applies: after letting `after` matches through, `times` in a row. */
export interface RuleOptions {
  after?: number;
  times?: number;
}

export interface FaultProxy extends AsyncDisposable {
  /** Base URL to point clients at (`http://127.0.0.1:<port>` plus the target's path). */
  url: string;
  /** Every request in arrival order. */
  requests: ProxiedRequest[];
  /** Every answered request, in the order answered. */
  timeline: Timing[];
  /** Connections accepted so far (a black hole reads no request, but counts these). */
  connectionsAccepted(): number;
  /** Probability of a random fault; may be changed between runs (0 stops random faults). */
  rate: number;
  /**
   * Queues a fault for one request whose operation equals `operation` (or matches it), after
   * letting `after` such requests through; `times` faults in a row (default 1).
   */
  inject(operation: string | RegExp, fault: Fault, options?: RuleOptions): void;
  /**
   * Forwards the next request matching `operation` and hands the client `change(answer)` instead
   * of the target's answer (e.g. a warning EC2 sends and moto does not).
   */
  rewrite(
    operation: string | RegExp,
    change: (answer: ProxyAnswer) => ProxyAnswer,
    options?: RuleOptions,
  ): void;
  /** Answers the next request matching `operation` with `answer`, without forwarding it. */
  respond(operation: string | RegExp, answer: ProxyAnswer, options?: RuleOptions): void;
  /** The requests that got a fault. */
  injected(): ProxiedRequest[];
  /** Seed, rate and the faults injected so far, for assertion messages (a failure replays). */
  describe(): string;
  /** Closes the listener and every connection, stalled ones included. */
  close(): Promise<void>;
}

type Action =
  | Fault
  | { rewrite: (answer: ProxyAnswer) => ProxyAnswer }
  | { respond: ProxyAnswer };

interface Rule {
  match: string | RegExp;
  action: Action;
  after: number;
  times: number;
}

interface Request {
  method: string;
  target: string;
  headers: Headers;
  body: Bytes;
}

type Bytes = Uint8Array<ArrayBuffer>;

/**
 * A {@link FaultProxy.rewrite} change that adds `xml` at the start of every `<element>` of an
 * XML answer (EC2's query protocol), e.g. defaults EC2 puts in a `<launchTemplateData>` that
 * moto leaves out.
 */
export function addXmlFields(
  element: string,
  xml: string,
): (answer: ProxyAnswer) => ProxyAnswer {
  return (answer) => ({
    ...answer,
    body: answer.body.replaceAll(`<${element}>`, `<${element}>${xml}`),
  });
}

export function startFaultProxy(options: FaultProxyOptions): FaultProxy {
  const target = new URL(options.target);
  const seed = options.seed ?? 1;
  const kinds = options.faults ?? FAULTS.filter((f) => f !== "stall");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections = new Set<Deno.Conn>();
  const requests: ProxiedRequest[] = [];
  const timeline: Timing[] = [];
  let accepted = 0;
  const rules: Rule[] = [];
  const seen = new Map<string, number>();
  let closed = false;
  let closing: () => void;
  const whenClosed = new Promise<void>((resolve) => closing = resolve);

  const proxy: FaultProxy = {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}${
      target.pathname.replace(/\/$/, "")
    }`,
    requests,
    timeline,
    connectionsAccepted: () => accepted,
    rate: options.rate ?? 0,
    inject(match, fault, { after = 0, times = 1 } = {}) {
      rules.push({ match, action: fault, after, times });
    },
    rewrite(match, change, { after = 0, times = 1 } = {}) {
      rules.push({ match, action: { rewrite: change }, after, times });
    },
    respond(match, answer, { after = 0, times = 1 } = {}) {
      rules.push({ match, action: { respond: answer }, after, times });
    },
    injected: () => requests.filter((r) => r.fault),
    describe() {
      const faults = requests.flatMap((r, i) =>
        r.fault ? [`#${i} ${r.operation}: ${r.fault}`] : []
      );
      return `fault proxy seed ${seed}, rate ${proxy.rate}: ${requests.length} requests, ` +
        `${faults.length} faults${faults.length ? `\n  ${faults.join("\n  ")}` : ""}`;
    },
    async close() {
      if (closed) return;
      closed = true;
      closing();
      listener.close();
      for (const conn of connections) closeQuietly(conn);
      await Promise.all(serving);
    },
    [Symbol.asyncDispose]: () => proxy.close(),
  };

  /** What to do to this request: a queued rule first, else a seeded draw. */
  const decide = (operation: string): Action | undefined => {
    const n = seen.get(operation) ?? 0;
    seen.set(operation, n + 1);
    const rule = rules.find((r) =>
      typeof r.match === "string" ? r.match === operation : r.match.test(operation)
    );
    if (rule) {
      if (rule.after > 0) rule.after--;
      else {
        if (--rule.times === 0) rules.splice(rules.indexOf(rule), 1);
        return rule.action;
      }
    }
    if (proxy.rate <= 0 || (options.only && !options.only.test(operation))) return undefined;
    const random = mulberry32(hash(`${seed}:${operation}:${n}`));
    if (random() >= proxy.rate) return undefined;
    return kinds[Math.floor(random() * kinds.length)];
  };

  /** Waits `ms` (the service's latency), or until the proxy closes. */
  const delay = async (ms: number) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([whenClosed, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
    clearTimeout(timer);
  };

  const serve = async (conn: Deno.Conn) => {
    connections.add(conn);
    accepted++;
    const reader = new Reader(conn);
    try {
      if (options.blackHole) return await whenClosed;
      while (!closed) {
        const request = await readRequest(reader);
        if (!request) return;
        const start = performance.now();
        const operation = operationOf(request);
        const latency = options.latencyMs?.[operation.slice(0, operation.indexOf("."))] ?? 0;
        if (latency > 0) await delay(latency);
        if (closed) return;
        const action = decide(operation);
        if (typeof action === "object") {
          const rewrite = "rewrite" in action;
          requests.push({ operation, fault: rewrite ? "rewrite" : "respond" });
          const answer = rewrite
            ? fromProxyAnswer(action.rewrite(toProxyAnswer(await forward(target, request))))
            : fromProxyAnswer(action.respond);
          await writeResponse(conn, answer);
          continue;
        }
        const fault = action;
        requests.push(fault ? { operation, fault } : { operation });
        if (fault === "drop") return;
        if (fault === "stall") {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            whenClosed,
            new Promise((resolve) => {
              if (options.stallMs !== undefined) timer = setTimeout(resolve, options.stallMs);
            }),
          ]);
          clearTimeout(timer);
          return;
        }
        if (fault === "throttle" || fault === "error") {
          const variant = requests.filter((r) => r.fault === fault).length;
          await writeResponse(conn, faultResponse(operation, fault, variant));
          continue;
        }
        const response = await forward(target, request);
        if (fault === "lose-reply") {
          // Only the head of the answer, then hang up. (Closing without a byte would not do: on
          // a reused keep-alive connection, the HTTP client resends such a request itself.)
          await writeResponse(conn, response, { headOnly: true });
          return;
        }
        await writeResponse(conn, response);
        timeline.push({ operation, start, end: performance.now() });
        if (request.headers.get("connection")?.toLowerCase() === "close") return;
      }
    } catch {
      // The client went away or sent something unreadable: nothing to answer.
    } finally {
      connections.delete(conn);
      closeQuietly(conn);
    }
  };

  const serving: Promise<void>[] = [];
  (async () => {
    try {
      for await (const conn of listener) serving.push(serve(conn));
    } catch {
      // listener closed
    }
  })();
  return proxy;
}

/** `Service.Operation` for an AWS request, `GitHub.METHOD /path` for anything else. */
function operationOf(request: Request): string {
  const amzTarget = request.headers.get("x-amz-target");
  if (amzTarget) {
    const [prefix, operation] = amzTarget.split(".");
    const service = prefix.startsWith("DynamoDB")
      ? "DynamoDB"
      : prefix === "AmazonSQS"
      ? "SQS"
      : prefix;
    return `${service}.${operation}`;
  }
  const scope = /Credential=[^/]+\/[^/]+\/[^/]+\/([^/]+)\//.exec(
    request.headers.get("authorization") ?? "",
  );
  if (scope) {
    const action = new URLSearchParams(new TextDecoder().decode(request.body)).get("Action");
    const service = scope[1] === "ec2" ? "EC2" : scope[1] === "sqs" ? "SQS" : scope[1];
    return `${service}.${action ?? "Unknown"}`;
  }
  return `GitHub.${request.method} ${request.target.split("?")[0]}`;
}

interface Answer {
  status: number;
  reason: string;
  headers: [string, string][];
  body: Bytes;
}

/**
 * The throttling or internal error answer of the service `operation` belongs to; where a service
 * has two throttling answers, `variant` picks one (odd, even).
 */
function faultResponse(operation: string, fault: "throttle" | "error", variant: number): Answer {
  const service = operation.slice(0, operation.indexOf("."));
  const requestId = crypto.randomUUID();
  const text = (status: number, reason: string, type: string, body: string, headers = {}) => ({
    status,
    reason,
    headers: [["content-type", type], ...Object.entries(headers)] as [string, string][],
    body: new TextEncoder().encode(body),
  });
  const ec2 = (status: number, reason: string, code: string, message: string) =>
    text(
      status,
      reason,
      "text/xml;charset=UTF-8",
      `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code>` +
        `<Message>${message}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`,
    );
  const json = (status: number, reason: string, type: string, message: string, headers = {}) =>
    text(
      status,
      reason,
      "application/x-amz-json-1.0",
      JSON.stringify({ __type: type, message }),
      { "x-amzn-requestid": requestId, ...headers },
    );
  if (service === "EC2") {
    return fault === "throttle"
      ? ec2(503, "Service Unavailable", "RequestLimitExceeded", "Request limit exceeded.")
      : ec2(500, "Internal Server Error", "InternalError", "An internal error has occurred.");
  }
  if (service === "DynamoDB") {
    if (fault === "error") {
      return json(
        500,
        "Internal Server Error",
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
      );
    }
    // Both throttling errors DynamoDB sends: request rate, and (provisioned tables) capacity.
    return variant % 2
      ? json(
        400,
        "Bad Request",
        "com.amazonaws.dynamodb.v20120810#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
      )
      : json(
        400,
        "Bad Request",
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
      );
  }
  if (service === "SQS") {
    return fault === "throttle"
      ? json(400, "Bad Request", "com.amazonaws.sqs#RequestThrottled", "Rate exceeded", {
        "x-amzn-query-error": "RequestThrottled;Sender",
      })
      : json(500, "Internal Server Error", "com.amazonaws.sqs#InternalError", "Internal error", {
        "x-amzn-query-error": "InternalFailure;Receiver",
      });
  }
  // GitHub.
  const github = (status: number, reason: string, message: string, headers = {}) =>
    text(status, reason, "application/json; charset=utf-8", JSON.stringify({ message }), headers);
  if (fault === "error") return github(500, "Internal Server Error", "Server Error");
  return variant % 2
    ? github(403, "Forbidden", "API rate limit exceeded for user ID 1.", {
      "x-ratelimit-limit": "5000",
      "x-ratelimit-remaining": "0",
      "x-ratelimit-used": "5000",
      "x-ratelimit-reset": String(Math.ceil(Date.now() / 1000) + 1),
    })
    : github(
      429,
      "Too Many Requests",
      "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
      { "retry-after": "1" },
    );
}

function toProxyAnswer(answer: Answer): ProxyAnswer {
  return {
    status: answer.status,
    headers: Object.fromEntries(answer.headers),
    body: new TextDecoder().decode(answer.body),
  };
}

function fromProxyAnswer(answer: ProxyAnswer): Answer {
  return {
    status: answer.status,
    reason: answer.status < 400 ? "OK" : "Error",
    headers: Object.entries(answer.headers).filter(([k]) => k.toLowerCase() !== "content-length"),
    body: new TextEncoder().encode(answer.body),
  };
}

/** Sends the request to the target and reads the whole answer (fetch decodes any compression). */
async function forward(target: URL, request: Request): Promise<Answer> {
  const headers = new Headers();
  for (const [name, value] of request.headers) {
    if (!HOP_BY_HOP.has(name)) headers.set(name, value);
  }
  const url = `${target.protocol}//${target.host}${request.target}`;
  const hasBody = request.method !== "GET" && request.method !== "HEAD";
  const response = await fetch(url, {
    method: request.method,
    headers,
    ...(hasBody ? { body: request.body } : {}),
    redirect: "manual",
  });
  const body = new Uint8Array(await response.arrayBuffer());
  const out: [string, string][] = [];
  for (const [name, value] of response.headers) {
    if (!HOP_BY_HOP.has(name) && name !== "content-encoding") out.push([name, value]);
  }
  return { status: response.status, reason: response.statusText || "OK", headers: out, body };
}

const HOP_BY_HOP = new Set([
  "host",
  "connection",
  "keep-alive",
  "content-length",
  "transfer-encoding",
  "expect",
  "upgrade",
]);

async function writeResponse(
  conn: Deno.Conn,
  answer: Answer,
  { headOnly = false } = {},
): Promise<void> {
  const head = [
    `HTTP/1.1 ${answer.status} ${answer.reason}`,
    ...answer.headers.map(([k, v]) => `${k}: ${v}`),
    `content-length: ${answer.body.length}`,
    "connection: keep-alive",
    "",
    "",
  ].join("\r\n");
  await writeAll(conn, new TextEncoder().encode(head));
  if (!headOnly) await writeAll(conn, answer.body);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** Reads one HTTP/1.1 request (Content-Length or chunked body), or null at end of stream. */
async function readRequest(reader: Reader): Promise<Request | null> {
  const head = await reader.readUntil(CRLF2);
  if (head === null) return null;
  const [requestLine, ...lines] = new TextDecoder().decode(head).split("\r\n");
  const [method, target] = requestLine.split(" ");
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body: Bytes = new Uint8Array();
  if (headers.get("transfer-encoding")?.toLowerCase().includes("chunked")) {
    const parts: Bytes[] = [];
    while (true) {
      const sizeLine = await reader.readUntil(CRLF);
      if (sizeLine === null) throw new Error("truncated chunked body");
      const size = parseInt(new TextDecoder().decode(sizeLine), 16);
      if (size === 0) {
        await reader.readUntil(CRLF); // the empty trailer
        break;
      }
      const chunk = await reader.readExactly(size + 2);
      if (chunk === null) throw new Error("truncated chunk");
      parts.push(chunk.subarray(0, size));
    }
    body = concat(parts);
  } else {
    const length = Number(headers.get("content-length") ?? 0);
    if (length > 0) {
      const read = await reader.readExactly(length);
      if (read === null) throw new Error("truncated body");
      body = read;
    }
  }
  return { method, target, headers, body };
}

const CRLF = new Uint8Array([13, 10]);
const CRLF2 = new Uint8Array([13, 10, 13, 10]);

/** A small buffered reader over a connection. */
class Reader {
  #buffer: Bytes = new Uint8Array();
  constructor(readonly conn: Deno.Conn) {}

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    this.#buffer = concat([this.#buffer, chunk.subarray(0, n)]);
    return true;
  }

  /** The bytes before `delimiter` (which is consumed), or null when the stream ends first. */
  async readUntil(delimiter: Uint8Array): Promise<Bytes | null> {
    while (true) {
      const at = indexOf(this.#buffer, delimiter);
      if (at >= 0) {
        const out = this.#buffer.slice(0, at);
        this.#buffer = this.#buffer.slice(at + delimiter.length);
        return out;
      }
      if (!(await this.#fill())) return null;
    }
  }

  async readExactly(n: number): Promise<Bytes | null> {
    while (this.#buffer.length < n) if (!(await this.#fill())) return null;
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** FNV-1a: a string to a 32-bit seed. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** A small seeded PRNG (mulberry32): numbers in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
