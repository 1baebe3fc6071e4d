import assert from "node:assert/strict";
import { statCpuSeconds } from "./support/proc_stat.ts";

// Two processes' /proc/<pid>/stat lines (fields 14-17: utime stime cutime cstime, in ticks); the
// second one's name holds a space and a parenthesis, as a process may name itself.
const STAT = [
  "4242 (bash) S 1 4242 4242 0 -1 4194560 900 3000 0 0 120 30 7 3 20 0 1 0 588259 2998272 412",
  "4243 (Runner.Listener) x) R 4242 4242 4242 0 -1 4194304 104 0 0 0 50 25 0 0 20 0 1 0 5 0 0",
  "100",
].join("\n");

Deno.test("statCpuSeconds sums user, system and waited-for children's time of every process", () => {
  // (120 + 30 + 7 + 3) + (50 + 25 + 0 + 0) = 235 ticks at 100 a second.
  assert.equal(statCpuSeconds(`${STAT}\n`), 2.35);
});

Deno.test("statCpuSeconds counts ticks at the clock rate the last line gives", () => {
  assert.equal(statCpuSeconds(STAT.replace(/100$/, "250")), 0.94);
});

Deno.test("statCpuSeconds is zero when no process is listed", () => {
  assert.equal(statCpuSeconds("100\n"), 0);
});

Deno.test("statCpuSeconds reads this machine's own /proc/self/stat as a number of seconds", async () => {
  const { stdout } = await new Deno.Command("bash", {
    args: ["-c", "cat /proc/self/stat; echo; getconf CLK_TCK"],
    stdout: "piped",
  }).output();
  const seconds = statCpuSeconds(new TextDecoder().decode(stdout));
  assert.ok(Number.isFinite(seconds) && seconds >= 0, String(seconds));
});
