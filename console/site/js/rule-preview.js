// What a threshold rule would have done to one sensor's readings, oldest first: the rule semantics of
// the processor's counter script (processor/stream/counters.lua; its model in testkit/rules_model.py),
// for one rule and one sensor. The readings are taken in the order of their times, as stored: the
// processor takes them as they arrive, so a late reading can make the two differ.

const COMPARE = {
  COMPARISON_GREATER_OR_EQUAL: (value, threshold) => value >= threshold,
  COMPARISON_GREATER: (value, threshold) => value > threshold,
  COMPARISON_LESS_OR_EQUAL: (value, threshold) => value <= threshold,
  COMPARISON_LESS: (value, threshold) => value < threshold,
};

/** Microseconds of an RFC 3339 time (its fraction kept to the microsecond). */
function micros(rfc3339) {
  const match = /\.(\d+)/.exec(rfc3339);
  const fraction = match ? Number(match[1].slice(0, 6).padEnd(6, "0")) : 0;
  return Math.floor(Date.parse(rfc3339.replace(/\.\d+/, "")) / 1000) * 1_000_000 + fraction;
}

/** Seconds of a Duration as JSON ("90s", "1.5s"): microseconds; 0 when unset. */
function durationMicros(duration) {
  return duration ? Math.round(Number.parseFloat(duration) * 1_000_000) : 0;
}

/**
 * The changes of the rule's alarm over `readings` ({readingTime, value}, oldest first): a list of
 * {change: "raised" | "cleared", time, value}. `rule` as the API gives it (JSON names).
 */
export function preview(rule, readings) {
  const compare = COMPARE[rule.comparison] ?? COMPARE.COMPARISON_GREATER_OR_EQUAL;
  const threshold = Number(rule.threshold ?? 0);
  const count = Number(rule.count) || 1;
  const clearCount = Number(rule.clearCount) || 1;
  const duration = durationMicros(rule.duration);
  const changes = [];
  let run = 0; // warnings in a row
  let since = null; // the time of the run's first warning; null once the run raised
  let active = false;
  let clears = 0; // readings in a row that are no warnings, while the alarm is active
  let latest = -Infinity;
  for (const reading of readings) {
    const at = micros(reading.readingTime);
    if (at <= latest) continue; // a repeat: it changes nothing
    latest = at;
    const warning = compare(reading.value, threshold);
    let met = false;
    if (!warning) {
      run = 0;
      since = null;
    } else {
      run += 1;
      if (!duration) {
        met = run === count;
      } else {
        if (run === 1) since = at;
        if (since !== null && run >= count && at - since >= duration) {
          met = true;
          since = null;
        }
      }
    }
    if (!active) {
      if (met) {
        active = true;
        clears = 0;
        changes.push({ change: "raised", time: reading.readingTime, value: reading.value });
      }
    } else if (warning) {
      clears = 0;
    } else if (++clears >= clearCount) {
      active = false;
      changes.push({ change: "cleared", time: reading.readingTime, value: reading.value });
    }
  }
  return changes;
}
