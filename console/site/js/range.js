// A sensor page's time range: a preset ending now, or fixed ends (zoomed or picked); kept in the
// page's URL so that a link shows the same view.

const MINUTE_MS = 60_000;
export const PRESETS = [
  { name: "15m", label: "Last 15 minutes", span: 15 * MINUTE_MS },
  { name: "1h", label: "Last hour", span: 60 * MINUTE_MS },
  { name: "6h", label: "Last 6 hours", span: 6 * 60 * MINUTE_MS },
  { name: "24h", label: "Last 24 hours", span: 24 * 60 * MINUTE_MS },
  { name: "7d", label: "Last 7 days", span: 7 * 24 * 60 * MINUTE_MS },
  { name: "30d", label: "Last 30 days", span: 30 * 24 * 60 * MINUTE_MS },
];
// Zooming stops at this span (ten one-minute buckets) and at a year.
const NARROWEST_MS = 10 * MINUTE_MS;
const WIDEST_MS = 366 * 24 * 60 * MINUTE_MS;
// Bucket widths, in minutes (the API takes whole minutes and at most 1,000 buckets a request).
const WIDTHS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
const TARGET_BUCKETS = 240;

/** {preset?, from, to} (ms) from the URL's query; else the last hour, or the hour up to `lastSeen`
 * when the sensor has been quiet for longer (a quiet sensor's page would otherwise be empty). */
export function fromQuery(query, lastSeenMs, now = Date.now()) {
  const preset = PRESETS.find((p) => p.name === query.get("range"));
  if (preset) return { preset: preset.name, from: now - preset.span, to: now };
  const from = Date.parse(query.get("from") ?? "");
  const to = Date.parse(query.get("to") ?? "");
  if (from < to) return { from, to };
  if (lastSeenMs < now - PRESETS[1].span) return { from: lastSeenMs - PRESETS[1].span, to: lastSeenMs + MINUTE_MS };
  return { preset: "1h", from: now - PRESETS[1].span, to: now };
}

/** The query parameters of a range. */
export function toQuery(range) {
  return range.preset
    ? { range: range.preset }
    : { from: new Date(range.from).toISOString(), to: new Date(range.to).toISOString() };
}

/** A preset range, ending now. */
export function preset(name, now = Date.now()) {
  const chosen = PRESETS.find((p) => p.name === name);
  return { preset: chosen.name, from: now - chosen.span, to: now };
}

/** Fixed ends, kept within the narrowest and widest spans. */
export function between(from, to) {
  const span = Math.min(WIDEST_MS, Math.max(NARROWEST_MS, to - from));
  const middle = (from + to) / 2;
  return { from: Math.round(middle - span / 2), to: Math.round(middle + span / 2) };
}

/** The range `factor` times as wide, around the same middle. */
export function zoom(range, factor) {
  const middle = (range.from + range.to) / 2;
  const half = ((range.to - range.from) * factor) / 2;
  return between(middle - half, middle + half);
}

/** Bucket width in seconds for a span: about TARGET_BUCKETS buckets, of a round number of minutes. */
export function bucketSeconds(spanMs) {
  const minutes = spanMs / MINUTE_MS / TARGET_BUCKETS;
  const width = WIDTHS.find((w) => w >= minutes) ?? Math.ceil(minutes / 1440) * 1440;
  return width * 60;
}

/** A time as a datetime-local input shows it (the browser's time zone, to the minute). */
export function localInput(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
