/**
 * A small fake of the GitHub REST API on 127.0.0.1, so tests exercise the real Octokit over HTTP.
 *
 * It answers the endpoints refresh uses (runner registration tokens for repositories and
 * organizations, App installation look-up and access tokens, self-hosted runner listing and
 * deletion, releases by tag and the latest release), checks the `Authorization` header against the credentials it was
 * given, and records every request. A test can queue one-off responses (errors, rate limits)
 * with `fail`.
 *
 *     await using gh = startFakeGithub({ tokens: [TEST_PAT] });
 *     // ... point refresh at gh.url ...
 *     assertEquals(gh.requests.length, 1);
 */

export interface RecordedRequest {
  method: string;
  path: string;
  authorization: string | null;
  body: unknown;
}

export interface FakeRunner {
  id: number;
  name: string;
  status: "online" | "offline";
  busy: boolean;
  /** Its labels, as GitHub lists them (`type` "read-only" for default labels, else "custom"). */
  labels?: { id?: number; name: string; type?: "read-only" | "custom" }[];
}

export interface QueuedResponse {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface FakeGithubOptions {
  /** Bearer tokens accepted (PATs and installation tokens). */
  tokens?: string[];
  /** Path prefix, e.g. "/api/v3" to act as GitHub Enterprise Server. */
  basePath?: string;
  /** Lifetime of registration tokens handed out, in seconds (GitHub: one hour). */
  tokenLifetimeSec?: number;
  /** The clock the server stamps `expires_at` with. */
  now?: () => Date;
  /**
   * GitHub App: its id and the installation id it answers with. JWT-shaped bearers are accepted;
   * with `publicKeyPem` (SPKI) a JWT must also be signed by that key (RS256), be issued by `id`
   * and not be expired. With `installedOn` ("owner/repo" or "org"), the installation look-up
   * answers 404 elsewhere.
   */
  app?: { id: string; installationId: number; publicKeyPem?: string; installedOn?: string[] };
  runners?: FakeRunner[];
  /**
   * Releases served by `GET /repos/{owner}/{repo}/releases/tags/{tag}`; `.../releases/latest`
   * answers with the repository's most recently published one (the last given when none says).
   */
  releases?: FakeRelease[];
}

/** A release as GitHub's REST API shows it (the fields refresh reads). */
export interface FakeRelease {
  /** "owner/repo". */
  repository: string;
  tag_name: string;
  /** ISO 8601, e.g. "2026-04-02T10:00:00Z". */
  published_at?: string;
  body?: string;
  assets?: { name: string; digest?: string | null }[];
}

export interface FakeGithub extends AsyncDisposable {
  url: string;
  requests: RecordedRequest[];
  runners: FakeRunner[];
  /** Registration tokens handed out, in order. */
  issued: string[];
  /** Queues a response for the next request whose `METHOD path` matches. */
  fail(match: RegExp, response: QueuedResponse): void;
  close(): Promise<void>;
}

export function startFakeGithub(options: FakeGithubOptions = {}): FakeGithub {
  const base = options.basePath ?? "";
  const tokens = new Set(options.tokens ?? []);
  const now = options.now ?? (() => new Date());
  const lifetime = options.tokenLifetimeSec ?? 3600;
  const requests: RecordedRequest[] = [];
  const issued: string[] = [];
  const runners = options.runners ?? [];
  const queued: { match: RegExp; response: QueuedResponse }[] = [];
  let counter = 0;

  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });

  // The scheme is case-insensitive (Octokit's App auth sends "bearer").
  const isJwt = async (auth: string | null) => {
    const m = /^Bearer ([\w-]+)\.([\w-]+)\.([\w-]+)$/i.exec(auth ?? "");
    if (!m) return false;
    if (!options.app?.publicKeyPem) return true;
    return await verifyJwt(m[1], m[2], m[3], options.app.publicKeyPem, options.app.id);
  };
  const isToken = (auth: string | null) => {
    const m = /^(?:token|Bearer) (.+)$/.exec(auth ?? "");
    return m !== null && tokens.has(m[1]);
  };

  const registrationToken = () => {
    const token = `AREG${String(++counter).padStart(4, "0")}RegistrationTokenSecretValue`;
    issued.push(token);
    return json(201, {
      token,
      expires_at: new Date(now().getTime() + lifetime * 1000).toISOString().replace(
        /\.\d+Z$/,
        "Z",
      ),
    });
  };

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      const text = await request.text();
      let body: unknown = undefined;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const authorization = request.headers.get("authorization");
      requests.push({ method: request.method, path: url.pathname, authorization, body });
      if (!url.pathname.startsWith(base)) return json(404, { message: "Not Found" });
      const path = url.pathname.slice(base.length);
      const key = `${request.method} ${path}`;

      const i = queued.findIndex((q) => q.match.test(key));
      if (i >= 0) {
        const { response } = queued.splice(i, 1)[0];
        return json(response.status, response.body ?? { message: "queued" }, response.headers);
      }

      // GitHub App endpoints, authenticated by the App's JWT.
      if (options.app) {
        const lookup = /^\/(?:repos\/([^/]+\/[^/]+)|orgs\/([^/]+))\/installation$/.exec(path);
        if (request.method === "GET" && lookup) {
          if (!(await isJwt(authorization))) {
            return json(401, { message: "A JSON web token could not be decoded" });
          }
          const target = lookup[1] ?? lookup[2];
          if (options.app.installedOn && !options.app.installedOn.includes(target)) {
            return json(404, { message: "Not Found" });
          }
          return json(200, { id: options.app.installationId, app_id: Number(options.app.id) });
        }
        const m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path);
        if (request.method === "POST" && m) {
          if (!(await isJwt(authorization))) {
            return json(401, { message: "A JSON web token could not be decoded" });
          }
          if (Number(m[1]) !== options.app.installationId) {
            return json(404, { message: "Not Found" });
          }
          const token = `ghs_InstallationToken${++counter}abcdefghijklmnop`;
          tokens.add(token);
          return json(201, {
            token,
            expires_at: new Date(now().getTime() + 3600_000).toISOString(),
            permissions: { administration: "write" },
          });
        }
      }

      if (!isToken(authorization)) return json(401, { message: "Bad credentials" });

      if (
        request.method === "POST" &&
        /^\/(repos\/[^/]+\/[^/]+|orgs\/[^/]+)\/actions\/runners\/registration-token$/.test(path)
      ) {
        return registrationToken();
      }

      const list = /^\/(repos\/[^/]+\/[^/]+|orgs\/[^/]+)\/actions\/runners$/.exec(path);
      if (request.method === "GET" && list) {
        const perPage = Number(url.searchParams.get("per_page") ?? 30);
        const page = Number(url.searchParams.get("page") ?? 1);
        const slice = runners.slice((page - 1) * perPage, page * perPage);
        const headers: Record<string, string> = {};
        if (page * perPage < runners.length) {
          const next = new URL(url);
          next.searchParams.set("page", String(page + 1));
          headers.link = `<${next.href}>; rel="next"`;
        }
        return json(200, { total_count: runners.length, runners: slice }, headers);
      }

      const tagged = /^\/repos\/([^/]+\/[^/]+)\/releases\/(?:tags\/([^/]+)|latest)$/.exec(path);
      if (request.method === "GET" && tagged) {
        const [, repository, tag] = tagged;
        const own = (options.releases ?? []).filter((r) => r.repository === repository);
        const release = tag === undefined
          ? own.reduce<FakeRelease | undefined>(
            (a, b) => (a && (a.published_at ?? "") > (b.published_at ?? "") ? a : b),
            undefined,
          )
          : own.find((r) => r.tag_name === decodeURIComponent(tag));
        if (!release) return json(404, { message: "Not Found" });
        const { repository: _, ...shown } = release;
        return json(200, {
          ...shown,
          assets: (release.assets ?? []).map((a, i) => ({
            id: i + 1,
            ...a,
            browser_download_url:
              `https://github.com/${repository}/releases/download/${release.tag_name}/${a.name}`,
          })),
        });
      }

      const del = /^\/(repos\/[^/]+\/[^/]+|orgs\/[^/]+)\/actions\/runners\/(\d+)$/.exec(path);
      if (request.method === "DELETE" && del) {
        const index = runners.findIndex((r) => r.id === Number(del[2]));
        if (index < 0) return json(404, { message: "Not Found" });
        if (runners[index].busy) {
          return json(422, { message: "Bad request - Runner is currently running a job" });
        }
        runners.splice(index, 1);
        return new Response(null, { status: 204 });
      }

      return json(404, { message: "Not Found" });
    },
  );
  const { port } = server.addr as Deno.NetAddr;
  const close = async () => {
    await server.shutdown();
  };
  return {
    url: `http://127.0.0.1:${port}${base}`,
    requests,
    runners,
    issued,
    fail: (match, response) => queued.push({ match, response }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

const base64url = (text: string) =>
  Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

/** Whether a JWT is signed (RS256) by the SPKI PEM key, issued by `iss`, and not expired. */
async function verifyJwt(
  header: string,
  payload: string,
  signature: string,
  publicKeyPem: string,
  iss: string,
): Promise<boolean> {
  const der = base64url(publicKeyPem.replace(/-----[A-Z ]+-----|\s/g, ""));
  const key = await crypto.subtle.importKey(
    "spki",
    der,
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const signed = new TextEncoder().encode(`${header}.${payload}`);
  if (!(await crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, base64url(signature), signed))) {
    return false;
  }
  const claims = JSON.parse(new TextDecoder().decode(base64url(payload)));
  return String(claims.iss) === iss && claims.exp > Date.now() / 1000;
}
