/**
 * Carries TCP connections to 127.0.0.1 ports from a network namespace of its own (a stock-rootfs
 * instance, test/support/stock_rootfs.ts) to the same ports on this machine's 127.0.0.1 (moto,
 * the fake metadata server, the fake runner package), through Unix sockets, which a network
 * namespace does not separate. The instance gets a network stack of its own (its firewall rules,
 * such as the bootstrap's metadata block, stay in it) and reaches only the services given.
 *
 * Two halves, one per side:
 * - inside the namespace, this module run as a program: `deno run --allow-net=127.0.0.1
 *   --allow-read --allow-write loopback_relay.ts SOCKET_DIR PORT...` listens on 127.0.0.1:PORT
 *   and connects each connection to SOCKET_DIR/PORT; it prints "ready" once listening;
 * - on this machine, {@link startHostRelay} listens on SOCKET_DIR/PORT and connects each to
 *   127.0.0.1:PORT.
 */
import { join } from "node:path";

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
 * This machine's half: Unix sockets `socketDir/<port>` for `ports`, each connection carried to
 * 127.0.0.1:<port>. Close it to stop listening.
 */
export function startHostRelay(socketDir: string, ports: number[]): { close(): void } {
  const listeners = ports.map((port) => {
    const listener = Deno.listen({ transport: "unix", path: join(socketDir, String(port)) });
    relay(listener, () => Deno.connect({ hostname: "127.0.0.1", port }));
    return listener;
  });
  return {
    close: () => {
      for (const listener of listeners) {
        try {
          listener.close();
        } catch {
          // already closed
        }
      }
    },
  };
}

/** Every 127.0.0.1 port named in `texts` (URLs of the harness' services), sorted, once each. */
export function loopbackPorts(...texts: string[]): number[] {
  const ports = texts.flatMap((text) =>
    [...text.matchAll(/\/\/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]))
  );
  return [...new Set(ports)].sort((a, b) => a - b);
}

if (import.meta.main) {
  const [socketDir, ...ports] = Deno.args;
  for (const port of ports) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(port) });
    relay(listener, () => Deno.connect({ transport: "unix", path: join(socketDir, port) }));
  }
  console.log("ready");
}
