/**
 * CPU time from Linux's /proc/<pid>/stat, for the harnesses that measure what an instance's
 * processes use (test/support/bootstrap_instance.ts, test/support/stock_rootfs.ts).
 */

/**
 * The CPU seconds in `output`: /proc/<pid>/stat lines, one a process, then a last line with the
 * clock's ticks per second (`getconf CLK_TCK`). Each process counts its user and system time and
 * that of its waited-for children (utime, stime, cutime, cstime: proc(5)).
 */
export function statCpuSeconds(output: string): number {
  const lines = output.trim().split("\n");
  const ticksPerSecond = Number(lines.pop());
  let ticks = 0;
  for (const line of lines) {
    // After "(comm)", which may hold spaces and parentheses: state ppid pgrp session tty tpgid
    // flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    const fields = line.slice(line.lastIndexOf(")") + 2).split(" ");
    ticks += fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0);
  }
  return ticks / ticksPerSecond;
}
