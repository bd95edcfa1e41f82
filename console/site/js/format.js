// How numbers and times read on every page: the browser's time zone, dates as 2026-11-30 15:47:00
// (unambiguous in any locale), numbers in the browser's locale.

const pad = (n) => String(n).padStart(2, "0");
const day = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const hm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

/** A time (RFC 3339 or ms) as date and time of day, to the second. */
export function when(time) {
  const d = new Date(time);
  return `${day(d)} ${hm(d)}:${pad(d.getSeconds())}`;
}

/** A time of day, to the second. */
export const clockTime = (date) => when(date).slice(11);

/** A chart's tick: the time of day, or the date for whole days; the date again where it changes. */
export function tick(ms, stepMs, previousMs) {
  const d = new Date(ms);
  if (stepMs >= 86_400_000) return day(d).slice(5);
  const text = stepMs >= 60_000 ? hm(d) : `${hm(d)}:${pad(d.getSeconds())}`;
  const newDay = previousMs === undefined || day(new Date(previousMs)) !== day(d);
  return newDay ? `${text}\n${day(d)}` : text;
}

/** A value as readings carry it; "–" for none. */
export const number = (value) => (value === undefined || value === null ? "–" : decimal.format(value));

/** A rate or a count from Prometheus, to `digits` decimals. */
export const figure = (value, digits) =>
  new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);

/** How long ago a time was, roughly: "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A reading's value with its unit, if it has one. */
export const reading = (metric) => [number(metric.value), metric.unit].filter(Boolean).join(" ");

/** Severities, most severe first, with their names for people. */
export const SEVERITIES = {
  SEVERITY_CRITICAL: "Critical",
  SEVERITY_MAJOR: "Major",
  SEVERITY_MINOR: "Minor",
  SEVERITY_WARNING: "Warning",
  SEVERITY_UNSPECIFIED: "None",
};

/** A rule's comparisons, as symbols. */
export const COMPARISONS = {
  COMPARISON_GREATER_OR_EQUAL: "≥", COMPARISON_GREATER: ">", COMPARISON_LESS_OR_EQUAL: "≤", COMPARISON_LESS: "<",
};

/** What a rule watches, in a few words. */
export function condition(rule) {
  if (rule.silence) return `no reading for ${rule.silence.after}`;
  return `${rule.metricType} ${COMPARISONS[rule.comparison] ?? "≥"} ${number(rule.threshold)}`;
}
