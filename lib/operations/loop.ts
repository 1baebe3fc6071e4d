/**
 * `--every`: refresh as a long-lived loop. A cycle starts every `everySec` while this process holds
 * the pool's lease (lease.ts), renewed before each cycle (and by the cycle while it runs); while
 * another holds it, this one is a standby that only retries the lease each interval (and says so
 * once per holder). When `stop` settles (the entry's SIGTERM or SIGINT), the cycle in flight
 * finishes, and the loop ends. Writes only the lease; the cycles write what runs write.
 *
 * @module
 */
import type { Lease } from "./lease.ts";

export interface LoopOptions {
  everySec: number;
  lease: Lease;
  /** Settles when the loop should end (after the cycle in flight). */
  stop: Promise<void>;
  /** One run; given the lease when this process holds it (undefined: ran without one). */
  cycle: (lease: Lease | undefined) => Promise<unknown>;
  /**
   * Takes the lease: "taken", "no table" (a new account, or a lease that cannot be read or
   * written: the cycle runs without it), or else the line saying who holds it.
   */
  take: () => Promise<string>;
  /** Where the standby's notices go. */
  log: (line: string) => void;
}

/** Runs cycles until `stop` settles; see the module documentation. */
export async function runLoop(options: LoopOptions): Promise<void> {
  const { lease, everySec } = options;
  let stopping = false;
  options.stop.then(() => stopping = true, () => stopping = true);
  let standby = "";
  while (!stopping) {
    const next = Date.now() + everySec * 1000;
    const renewed = lease.current ? await lease.renew() : false;
    const attempt = renewed ? "taken" : await options.take();
    if (attempt === "taken" || attempt === "no table") {
      standby = "";
      await options.cycle(lease.current ? lease : undefined);
    } else {
      const line = `standby: ${attempt.replace(/: another refresh .*$/, "")}`;
      if (line !== standby) options.log(line);
      standby = line;
    }
    await Promise.race([options.stop, sleep(Math.max(0, next - Date.now()))]);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    Deno.unrefTimer(timer);
  });
}
