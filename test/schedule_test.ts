import assert from "node:assert/strict";
import {
  hoursPerWeek,
  isWithin,
  localTime,
  parseSchedule,
  type Schedule,
} from "../lib/schedule.ts";

function schedule(text: string): Schedule {
  const parsed = parseSchedule(text);
  if (Array.isArray(parsed)) throw new Error(parsed.join("; "));
  return parsed;
}

Deno.test("schedule is inside working hours in its time zone, daylight saving time included", () => {
  const s = schedule("Mon-Fri 08:00-19:00 Europe/Berlin");
  // Winter (UTC+1): 07:00Z is 08:00 in Berlin.
  assert.equal(isWithin(s, new Date("2026-01-14T06:59:00Z")), false); // Wed 07:59
  assert.equal(isWithin(s, new Date("2026-01-14T07:00:00Z")), true); // Wed 08:00
  assert.equal(isWithin(s, new Date("2026-01-14T17:59:00Z")), true); // Wed 18:59
  assert.equal(isWithin(s, new Date("2026-01-14T18:00:00Z")), false); // Wed 19:00
  // Summer (UTC+2): 06:00Z is 08:00 in Berlin.
  assert.equal(isWithin(s, new Date("2026-07-15T06:00:00Z")), true);
  assert.equal(isWithin(s, new Date("2026-07-15T05:59:00Z")), false);
  // Saturday, any hour.
  assert.equal(isWithin(s, new Date("2026-01-17T12:00:00Z")), false);
});

Deno.test("schedule window over midnight belongs to the day it starts on", () => {
  const s = schedule("Fri 22:00-06:00");
  assert.equal(isWithin(s, new Date("2026-01-16T22:30:00Z")), true); // Fri
  assert.equal(isWithin(s, new Date("2026-01-17T05:59:00Z")), true); // Sat morning
  assert.equal(isWithin(s, new Date("2026-01-17T06:00:00Z")), false);
  assert.equal(isWithin(s, new Date("2026-01-16T05:00:00Z")), false); // Fri morning: Thu not listed
});

Deno.test("schedule takes daily, day lists, wrapping ranges, several windows and 24:00", () => {
  assert.equal(hoursPerWeek(schedule("daily 00:00-24:00")), 168);
  assert.equal(hoursPerWeek(schedule("Mon-Fri 08:00-19:00 Europe/Berlin")), 55);
  assert.equal(hoursPerWeek(schedule("Fri-Mon 10:00-12:00")), 8);
  assert.equal(hoursPerWeek(schedule("Mon,Wed 09:00-10:00; Sat 10:00-14:00 UTC")), 6);
  // Overlapping windows count once.
  assert.equal(hoursPerWeek(schedule("Mon 08:00-12:00; Mon 10:00-14:00")), 6);
  assert.equal(hoursPerWeek(schedule("Fri 22:00-06:00")), 8);
  const s = schedule("sat-sun 00:00-24:00 America/New_York");
  assert.deepEqual(s.windows[0].days, [0, 6]);
  assert.equal(isWithin(s, new Date("2026-01-18T04:59:00Z")), true); // Sat 23:59 in New York
  assert.equal(isWithin(s, new Date("2026-01-19T05:00:00Z")), false); // Mon 00:00 there
});

Deno.test("schedule reports every bad window with the offending part and what is expected", () => {
  const problems = parseSchedule(
    "Mon-Xyz 08:00-19:00; Mon 25:00-19:00; Tue 08:00-08:00; Wed 08:00-19:00 Mars/Olympus; Thu 8-9; ;",
  );
  assert.ok(Array.isArray(problems));
  const text = problems.join("\n");
  assert.match(text, /days "Mon-Xyz" are not daily, a day \(Mon\), a range/);
  assert.match(text, /start 25:00 is not a time 00:00-23:59/);
  assert.match(text, /"Tue 08:00-08:00": starts and ends at the same time/);
  assert.match(text, /unknown time zone "Mars\/Olympus"; expected an IANA name/);
  assert.match(text, /times "8-9" are not HH:MM-HH:MM/);
  assert.match(text, /empty window/);
  assert.deepEqual(parseSchedule("   "), [
    'expected one or more windows like "Mon-Fri 08:00-19:00 Europe/Berlin"',
  ]);
  assert.ok(Array.isArray(parseSchedule("Mon 08:00-24:30")));
  assert.ok(Array.isArray(parseSchedule("08:00-19:00")));
});

Deno.test("localTime gives the weekday and minute on the zone's wall clock", () => {
  assert.deepEqual(localTime(new Date("2026-01-15T23:30:00Z"), "Asia/Tokyo"), {
    day: 5, // Friday 08:30 in Tokyo
    minute: 8 * 60 + 30,
  });
  assert.deepEqual(localTime(new Date("2026-01-15T00:00:00Z"), "UTC"), { day: 4, minute: 0 });
});
