/**
 * A proxy on 127.0.0.1 in front of moto (which accepts any signature) that checks every request
 * the way AWS does before answering it: a Signature Version 4 `Authorization` header whose
 * signature, recomputed with the secret of its access key by the AWS SDK's own signer
 * (`@smithy/signature-v4`, an implementation independent of the bootstrap's), matches; the session
 * token of those credentials in `x-amz-security-token`; a request time within 5 minutes; the
 * expected region and the service the operation belongs to. A request that fails a check is
 * answered 403 (as AWS answers `SignatureDoesNotMatch`, `InvalidClientTokenId`, …) and not
 * forwarded; every request is recorded with its operation and what was wrong.
 *
 *     await using check = startSigV4Check({ target: MOTO_URL, region: "us-east-1", credentials: () => [imds.credentials] });
 */
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";

export interface SigningCredentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
}

export interface CheckedRequest {
  /** `DynamoDB.GetItem`, `EC2.TerminateInstances`, … */
  operation: string;
  accessKeyId?: string;
  /** What AWS would refuse the request for; undefined when it is correctly signed. */
  problem?: string;
}

export interface SigV4Check extends AsyncDisposable {
  url: string;
  requests: CheckedRequest[];
  close(): Promise<void>;
}

/** SHA-256 and HMAC-SHA-256 for the SDK's signer, from node:crypto. */
class NodeSha256 {
  #secret?: Uint8Array;
  #hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#secret = secret === undefined ? undefined : bytes(secret);
    this.#hash = this.#fresh();
  }
  #fresh(): Hash | Hmac {
    return this.#secret ? createHmac("sha256", this.#secret) : createHash("sha256");
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#hash.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#hash.digest()));
  }
  reset(): void {
    this.#hash = this.#fresh();
  }
}

function bytes(data: string | ArrayBuffer | ArrayBufferView): Uint8Array {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return new Uint8Array(data);
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/;

export function startSigV4Check(options: {
  target: string;
  region: string;
  credentials: () => SigningCredentials[];
}): SigV4Check {
  const requests: CheckedRequest[] = [];

  const problemOf = async (request: Request, body: Uint8Array, service: string) => {
    const header = request.headers.get("authorization") ?? "";
    const match = AUTHORIZATION.exec(header);
    if (!match) return { problem: `no SigV4 Authorization header (got "${header.slice(0, 40)}")` };
    const [, accessKeyId, day, region, scopeService, signedHeaders, signature] = match;
    const credentials = options.credentials().find((c) => c.AccessKeyId === accessKeyId);
    if (!credentials) return { accessKeyId, problem: `unknown access key ${accessKeyId}` };
    if (request.headers.get("x-amz-security-token") !== credentials.Token) {
      return { accessKeyId, problem: "x-amz-security-token is not the credentials' session token" };
    }
    if (region !== options.region) return { accessKeyId, problem: `scope region ${region}` };
    if (scopeService !== service) return { accessKeyId, problem: `scope service ${scopeService}` };
    const amzDate = request.headers.get("x-amz-date") ?? "";
    const when = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
    if (!when || amzDate.slice(0, 8) !== day) {
      return { accessKeyId, problem: `x-amz-date "${amzDate}" is not the scope's day ${day}` };
    }
    const signedAt = new Date(
      Date.UTC(+when[1], +when[2] - 1, +when[3], +when[4], +when[5], +when[6]),
    );
    if (Math.abs(signedAt.getTime() - Date.now()) > 5 * 60_000) {
      return { accessKeyId, problem: `request time ${amzDate} is more than 5 minutes off` };
    }
    const names = signedHeaders.split(";");
    for (const required of ["host", "x-amz-date", "x-amz-security-token"]) {
      if (!names.includes(required)) return { accessKeyId, problem: `${required} is not signed` };
    }
    const url = new URL(request.url);
    const headers: Record<string, string> = {};
    for (const name of names) {
      const value = request.headers.get(name);
      if (value === null) return { accessKeyId, problem: `signed header ${name} is missing` };
      headers[name] = value;
    }
    const signer = new SignatureV4({
      credentials: {
        accessKeyId,
        secretAccessKey: credentials.SecretAccessKey,
        sessionToken: credentials.Token,
      },
      region,
      service,
      sha256: NodeSha256,
      applyChecksum: false,
    });
    const signed = await signer.sign({
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      port: Number(url.port) || undefined,
      path: url.pathname,
      query: {},
      headers,
      body,
    }, { signingDate: signedAt });
    const expected = AUTHORIZATION.exec(signed.headers.authorization ?? "");
    if (!expected || expected[5] !== signedHeaders || expected[6] !== signature) {
      return { accessKeyId, problem: "the signature does not match (SignatureDoesNotMatch)" };
    }
    return { accessKeyId };
  };

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const body = new Uint8Array(await request.arrayBuffer());
      const target = request.headers.get("x-amz-target");
      const action = new URLSearchParams(new TextDecoder().decode(body)).get("Action");
      const [operation, service] = target
        ? [`DynamoDB.${target.split(".").at(-1)}`, "dynamodb"]
        : [`EC2.${action}`, "ec2"];
      const checked = await problemOf(request, body, service);
      requests.push({ operation, ...checked });
      if (checked.problem) {
        return new Response(
          JSON.stringify({ __type: "SignatureDoesNotMatch", message: checked.problem }),
          { status: 403, headers: { "content-type": "application/x-amz-json-1.0" } },
        );
      }
      const headers = new Headers(request.headers);
      headers.delete("host");
      const answer = await fetch(new URL(new URL(request.url).pathname, options.target), {
        method: request.method,
        headers,
        body,
      });
      return new Response(await answer.arrayBuffer(), {
        status: answer.status,
        headers: answer.headers,
      });
    },
  );
  const close = async () => {
    await server.shutdown();
  };
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close,
    [Symbol.asyncDispose]: close,
  };
}
