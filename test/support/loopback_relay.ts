/**
 * Carries TCP connections to 127.0.0.1 ports from a network namespace of its own (a stock-rootfs
 * instance, test/support/stock_rootfs.ts) to the same ports on this machine's 127.0.0.1 (moto,
 * the fake metadata server, the fake runner package), through Unix sockets, which a network
 * namespace does not separate. The instance gets a network stack of its own (its firewall rules,
 * such as the bootstrap's metadata block, stay in it) and reaches only the services given.
 *
 * Two halves, this module run as a program (`deno` with {@link relayArgs}), one per side:
 * - `inside` (in the namespace) listens on 127.0.0.1:PORT and connects each connection to
 *   SOCKET_DIR/PORT;
 * - `outside` (on this machine) listens on SOCKET_DIR/PORT and connects each to 127.0.0.1:PORT.
 */
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

/** Copies both ways until both sides are done, then closes both. */
async function splice(a: Deno.Conn, b: Deno.Conn): Promise<void> {
  const copy = async (from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        for (let done = 0; done < n;) done += await to.write(buffer.subarray(done, n));
      }
      await to.closeWrite();
    } catch {
      // a side went away: the other is closed below
    }
  };
  await Promise.all([copy(a, b), copy(b, a)]);
  for (const conn of [a, b]) {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** Accepts on `listener` until it closes, splicing each connection to a fresh `connect()`. */
async function relay(listener: Deno.Listener, connect: () => Promise<Deno.Conn>): Promise<void> {
  try {
    for await (const conn of listener) {
      connect().then((target) => splice(conn, target), () => conn.close());
    }
  } catch {
    // the listener was closed
  }
}

/**
 * The `deno` arguments that run one half for `ports`: `inside` listens on 127.0.0.1:<port> and
 * connects to `socketDir/<port>`; `outside` listens on `socketDir/<port>` and connects to
 * 127.0.0.1:<port>. Its permissions are exactly those sockets. It prints "ready" once listening.
 */
export function relayArgs(
  side: "inside" | "outside",
  socketDir: string,
  ports: number[],
): string[] {
  const sockets = ports.map((port) => `unix:${join(socketDir, String(port))}`);
  return [
    "run",
    "--quiet",
    `--allow-net=${["127.0.0.1", ...sockets].join(",")}`,
    `--allow-read=${socketDir}`,
    `--allow-write=${socketDir}`,
    fromFileUrl(import.meta.url),
    side,
    socketDir,
    ...ports.map(String),
  ];
}

/** Every 127.0.0.1 port named in `texts` (URLs of the harness' services), sorted, once each. */
export function loopbackPorts(...texts: string[]): number[] {
  const ports = texts.flatMap((text) =>
    [...text.matchAll(/\/\/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]))
  );
  return [...new Set(ports)].sort((a, b) => a - b);
}

if (import.meta.main) {
  const [side, socketDir, ...ports] = Deno.args;
  for (const port of ports.map(Number)) {
    const socket = join(socketDir, String(port));
    if (side === "inside") {
      const listener = Deno.listen({ hostname: "127.0.0.1", port });
      relay(listener, () => Deno.connect({ transport: "unix", path: socket }));
    } else {
      const listener = Deno.listen({ transport: "unix", path: socket });
      relay(listener, () => Deno.connect({ hostname: "127.0.0.1", port }));
    }
  }
  console.log("ready");
}
