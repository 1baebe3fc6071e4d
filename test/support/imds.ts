/**
 * A fake EC2 instance metadata service (IMDSv2 only) on 127.0.0.1, for running the generated
 * bootstrap (which reads its address from REFRESH_IMDS_ENDPOINT).
 *
 * As EC2 documents IMDSv2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
 * (1-21600) answers a session token; every other request must carry it in
 * `X-aws-ec2-metadata-token`, else 401 (what an instance whose metadata options require tokens
 * answers). It serves `meta-data/instance-id`, `meta-data/placement/region`, and instance tags
 * under `meta-data/tags/instance/` (404 for a tag that is not there, as with
 * InstanceMetadataTags=enabled and the tag missing), and the instance role's credentials as EC2
 * does: `meta-data/iam/security-credentials/` lists the role, `.../<role>` answers
 * `{Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration}` (fresh random
 * test values per server, {@link FakeImds.credentials}), and, once {@link FakeImds.announce}d,
 * a spot interruption notice or a rebalance recommendation. Every request is recorded.
 *
 *     await using imds = startFakeImds({ instanceId, region: "us-east-1", tags: { InitialRunId: "7" } });
 */

export interface ImdsRequest {
  method: string;
  path: string;
  /** Whether it carried a valid session token (the token PUT itself counts as authorized). */
  authorized: boolean;
  status: number;
}

/** The instance role's credentials the server hands out. */
export interface ImdsCredentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  /** ISO-8601 UTC without fractional seconds, as IMDS writes it. */
  Expiration: string;
}

export interface FakeImds extends AsyncDisposable {
  url: string;
  /** Role name under iam/security-credentials/. */
  role: string;
  /** The credentials currently served. */
  credentials: ImdsCredentials;
  requests: ImdsRequest[];
  /**
   * Announces what EC2 announces in metadata: a spot interruption (`spot/instance-action`:
   * `{"action": "terminate", "time": …}`, two minutes ahead) or a rebalance recommendation
   * (`events/recommendations/rebalance`: `{"noticeTime": …}`). Until then both answer 404.
   */
  announce(notice: "spot-interruption" | "rebalance-recommendation", at?: Date): void;
  close(): Promise<void>;
}

export function startFakeImds(options: {
  instanceId: string;
  region: string;
  tags: Record<string, string>;
  /** How long served credentials are valid (default 6 hours, as EC2's are about). */
  credentialsTtlSec?: number;
}): FakeImds {
  const role = "refresh-test-instance-role";
  const random = (n: number, alphabet: string) =>
    [...crypto.getRandomValues(new Uint8Array(n))].map((b) => alphabet[b % alphabet.length])
      .join("");
  const upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const credentials: ImdsCredentials = {
    AccessKeyId: `ASIA${random(16, upper)}`,
    SecretAccessKey: random(40, `${upper}abcdefghijklmnopqrstuvwxyz+/`),
    Token: random(200, `${upper}abcdefghijklmnopqrstuvwxyz+/=`),
    Expiration: new Date(Date.now() + (options.credentialsTtlSec ?? 21600) * 1000).toISOString()
      .replace(/\.\d{3}Z$/, "Z"),
  };
  const sessions = new Set<string>();
  const notices = new Map<string, string>();
  const iso = (date: Date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");
  const requests: ImdsRequest[] = [];
  const text = (status: number, body = "") =>
    new Response(body, { status, headers: { "content-type": "text/plain" } });

  const answer = (request: Request, path: string): Response => {
    if (request.method === "PUT" && path === "/latest/api/token") {
      const ttl = Number(request.headers.get("x-aws-ec2-metadata-token-ttl-seconds"));
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return text(400);
      const token = crypto.randomUUID();
      sessions.add(token);
      return text(200, token);
    }
    if (!sessions.has(request.headers.get("x-aws-ec2-metadata-token") ?? "")) return text(401);
    if (request.method !== "GET") return text(405);
    const tagPrefix = "/latest/meta-data/tags/instance/";
    if (path === "/latest/meta-data/instance-id") return text(200, options.instanceId);
    if (path === "/latest/meta-data/placement/region") return text(200, options.region);
    const credentialsPath = "/latest/meta-data/iam/security-credentials/";
    if (path === credentialsPath) return text(200, role);
    if (path === credentialsPath + role) {
      return text(
        200,
        JSON.stringify({
          Code: "Success",
          LastUpdated: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
          Type: "AWS-HMAC",
          ...credentials,
        }),
      );
    }
    const notice = notices.get(path);
    if (notice !== undefined) return text(200, notice);
    if (path === "/latest/meta-data/tags/instance") {
      return text(200, Object.keys(options.tags).join("\n"));
    }
    if (path.startsWith(tagPrefix)) {
      const value = options.tags[decodeURIComponent(path.slice(tagPrefix.length))];
      return value === undefined ? text(404) : text(200, value);
    }
    return text(404);
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    const response = answer(request, path);
    requests.push({
      method: request.method,
      path,
      authorized: response.status !== 401,
      status: response.status,
    });
    return response;
  });
  const close = async () => {
    await server.shutdown();
  };
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    role,
    credentials,
    requests,
    announce(notice, at = new Date()) {
      if (notice === "spot-interruption") {
        notices.set(
          "/latest/meta-data/spot/instance-action",
          JSON.stringify({ action: "terminate", time: iso(new Date(at.getTime() + 120_000)) }),
        );
      } else {
        notices.set(
          "/latest/meta-data/events/recommendations/rebalance",
          JSON.stringify({ noticeTime: iso(at) }),
        );
      }
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
