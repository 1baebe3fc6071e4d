/**
 * Weekly schedules (`--warm-pool-schedule`): when a warm pool keeps its minimum. Pure: parsing,
 * "is this moment inside?", and the hours a schedule covers per week (for the cost estimate).
 *
 * Syntax: one or more windows separated by `;`, each `DAYS HH:MM-HH:MM [TIME_ZONE]`:
 *
 * - DAYS: `daily`, a day (`Mon`), a range (`Mon-Fri`, wrapping: `Fri-Mon`), or a comma list of
 *   those (`Mon-Wed,Fri`). Day names are the first three letters in English, any case.
 * - `HH:MM-HH:MM`: 24-hour local times; the end may be `24:00`. An end before the start runs over
 *   midnight into the next day (`Mon-Fri 22:00-06:00` covers Monday 22:00 to Tuesday 06:00, and so
 *   on); the window belongs to the day it starts on. Start and end equal is refused (use
 *   `00:00-24:00` for a whole day).
 * - TIME_ZONE: an IANA name (`Europe/Berlin`, `America/New_York`) as `Intl` knows it; `UTC` when
 *   omitted. Local times follow daylight saving time: `08:00` is 08:00 on the wall clock there.
 *
 * Example: `Mon-Fri 08:00-19:00 Europe/Berlin; Sat 10:00-14:00 Europe/Berlin`.
 *
 * @module
 */

/** Day numbers as `Intl` and `Date.getUTCDay()` count them: Sunday 0 … Saturday 6. */
const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;

/** One window: the days it starts on, minutes after local midnight, and its time zone. */
export interface Window {
  days: number[];
  /** Minutes after midnight, 0-1439. */
  start: number;
  /** Minutes after midnight, 1-1440; at or before `start`: the window ends the next day. */
  end: number;
  timeZone: string;
}

export interface Schedule {
  /** The text it was parsed from, for reports. */
  text: string;
  windows: Window[];
}

/**
 * Parses a schedule; returns it, or the problems found (each naming the offending part and what
 * is expected).
 */
export function parseSchedule(text: string): Schedule | string[] {
  const problems: string[] = [];
  const windows: Window[] = [];
  const parts = text.split(";").map((p) => p.trim());
  if (parts.every((p) => p === "")) {
    return ['expected one or more windows like "Mon-Fri 08:00-19:00 Europe/Berlin"'];
  }
  for (const part of parts) {
    if (part === "") {
      problems.push(`empty window in ${JSON.stringify(text)} (a stray ";")`);
      continue;
    }
    const window = parseWindow(part, problems);
    if (window) windows.push(window);
  }
  return problems.length ? problems : { text: text.trim(), windows };
}

function parseWindow(part: string, problems: string[]): Window | undefined {
  const fields = part.split(/\s+/);
  if (fields.length < 2 || fields.length > 3) {
    problems.push(
      `window ${
        JSON.stringify(part)
      }: expected DAYS HH:MM-HH:MM [TIME_ZONE], like "Mon-Fri 08:00-19:00 Europe/Berlin"`,
    );
    return undefined;
  }
  const [dayText, timeText, zone = "UTC"] = fields;
  const before = problems.length;
  const days = parseDays(dayText, part, problems);
  const times = /^(\d{2}):(\d{2})-(\d{2}):(\d{2})$/.exec(timeText);
  let start = 0;
  let end = 1440;
  if (!times) {
    problems.push(
      `window ${JSON.stringify(part)}: times ${JSON.stringify(timeText)} are not HH:MM-HH:MM`,
    );
  } else {
    const [sh, sm, eh, em] = times.slice(1).map(Number);
    start = sh * 60 + sm;
    end = eh * 60 + em;
    if (sh > 23 || sm > 59) {
      problems.push(
        `window ${JSON.stringify(part)}: start ${timeText.slice(0, 5)} is not a time 00:00-23:59`,
      );
    }
    if (em > 59 || end > 1440) {
      problems.push(
        `window ${JSON.stringify(part)}: end ${timeText.slice(6)} is not a time 00:00-24:00`,
      );
    }
    if (start === (end === 0 ? 1440 : end) && problems.length === before) {
      problems.push(
        `window ${
          JSON.stringify(part)
        }: starts and ends at the same time; expected a span (00:00-24:00 for a whole day)`,
      );
    }
  }
  if (!validTimeZone(zone)) {
    problems.push(
      `window ${JSON.stringify(part)}: unknown time zone ${
        JSON.stringify(zone)
      }; expected an IANA name like Europe/Berlin or UTC`,
    );
  }
  if (problems.length > before) return undefined;
  return { days: days!, start, end: end === 0 ? 1440 : end, timeZone: zone };
}

function parseDays(text: string, part: string, problems: string[]): number[] | undefined {
  const lower = text.toLowerCase();
  if (lower === "daily") return [0, 1, 2, 3, 4, 5, 6];
  const days = new Set<number>();
  for (const item of lower.split(",")) {
    const range = item.split("-");
    const numbers = range.map((d) => DAYS.indexOf(d as typeof DAYS[number]));
    if (range.length > 2 || numbers.some((n) => n < 0) || item === "") {
      problems.push(
        `window ${JSON.stringify(part)}: days ${
          JSON.stringify(text)
        } are not daily, a day (Mon), a range (Mon-Fri) or a comma list of those`,
      );
      return undefined;
    }
    const [from, to = from] = numbers;
    for (let d = from;; d = (d + 1) % 7) {
      days.add(d);
      if (d === to) break;
    }
  }
  return [...days].sort();
}

function validTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The local weekday (0 Sunday) and minutes after local midnight of `at` in `timeZone`. */
export function localTime(at: Date, timeZone: string): { day: number; minute: number } {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    weekday: "short",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(at);
  const get = (type: string) => parts.find((p) => p.type === type)?.value ?? "";
  const day = DAYS.indexOf(get("weekday").toLowerCase() as typeof DAYS[number]);
  return { day, minute: Number(get("hour")) * 60 + Number(get("minute")) };
}

/** Whether `at` falls inside any window of the schedule. */
export function isWithin(schedule: Schedule, at: Date): boolean {
  return schedule.windows.some((w) => {
    const { day, minute } = localTime(at, w.timeZone);
    if (w.end > w.start) return w.days.includes(day) && minute >= w.start && minute < w.end;
    // Over midnight: the evening of a listed day, or the morning after one.
    const yesterday = (day + 6) % 7;
    return (w.days.includes(day) && minute >= w.start) ||
      (w.days.includes(yesterday) && minute < w.end);
  });
}

/**
 * Hours per week the schedule covers (overlapping windows counted once; on a day when clocks
 * change, an hour more or less than this).
 */
export function hoursPerWeek(schedule: Schedule): number {
  // Minute by minute over a week of local time, per window's own clock: exact and cheap (10,080).
  const covered = new Set<number>();
  for (const w of schedule.windows) {
    for (const day of w.days) {
      const length = w.end > w.start ? w.end - w.start : 1440 - w.start + w.end;
      for (let m = 0; m < length; m++) covered.add((day * 1440 + w.start + m) % 10_080);
    }
  }
  return covered.size / 60;
}
