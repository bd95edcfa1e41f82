// Pipeline health: Prometheus's recording rules for the pipeline, read through Envoy
// (/prometheus/api/v1/query), every few seconds while the page is open; each with its last hour
// (query_range) as a small chart, and the alerts Prometheus has firing (/api/v1/alerts).
import { ApiError, get } from "./api.js";
import { h, heading, time } from "./dom.js";
import { clockTime, figure } from "./format.js";
import { problem } from "./problem.js";

// Each rule is one instant vector; `by` names the label whose values get a line each.
const FIGURES = [
  { rule: "metrics:readings_accepted:rate1m", label: "Readings accepted", unit: "per second", digits: 1 },
  { rule: "metrics:rows_stored:rate1m", label: "Readings stored", unit: "per second", digits: 1 },
  { rule: "metrics:events_raised:rate1m", label: "Events raised", unit: "per second", digits: 2 },
  { rule: "metrics:consumer_lag:sum", label: "Consumer lag", unit: "records not yet processed", by: "group", digits: 0 },
  { rule: "metrics:dead_letters:increase5m", label: "Dead letters", unit: "in the last 5 minutes", digits: 0 },
  { rule: "metrics:mqtt_clients:sum", label: "MQTT clients", unit: "connected to the brokers", digits: 0 },
  { rule: "metrics:mqtt_messages:rate1m", label: "MQTT messages", unit: "per second, to Kafka", digits: 1 },
];
// All of them in one query (one request each time, not one each): their series carry their names.
const QUERY = `{__name__=~"${FIGURES.map((f) => f.rule).join("|")}"}`;
const EVERY_MS = 5000;
// The last hour and the alerts are read every this many rounds (30 s).
const HISTORY_ROUNDS = 6;
const HOUR_S = 3600;
const STEP_S = 30;
// Envoy's answers when Prometheus is not routed (404), not running (503) or failing (502, 504).
const UNREACHABLE = new Set([0, 404, 502, 503, 504]);

export async function healthPage(main, { signal }) {
  const state = h("div", { class: "health-state", role: "status" });
  const tiles = h("div", { class: "tiles" });
  const alerts = h("section", { class: "alerts", "aria-labelledby": "alerts-heading" });
  main.append(heading("Pipeline health"), state, tiles, alerts);
  let history = new Map();
  for (let round = 0; !signal.aborted; round++) {
    try {
      const answer = await get("/prometheus/api/v1/query", { query: QUERY }, { signal });
      if (round % HISTORY_ROUNDS === 0) {
        [history] = await Promise.all([lastHour(signal), firing(signal).then((found) => alerts.replaceChildren(...found))]);
      }
      const samples = answer.data.result;
      tiles.replaceChildren(...FIGURES.map((f) => tile(f, samples.filter((s) => s.metric.__name__ === f.rule), history.get(f.rule))));
      state.dataset.state = "reachable";
      state.textContent = `From Prometheus, updated at ${clockTime(new Date())}, every ${EVERY_MS / 1000} s.`;
    } catch (error) {
      if (signal.aborted) return;
      tiles.replaceChildren();
      alerts.replaceChildren();
      history = new Map();
      round = -1; // the last hour again with the figures, once Prometheus answers
      state.replaceChildren();
      if (error instanceof ApiError && UNREACHABLE.has(error.status)) {
        state.dataset.state = "unreachable";
        state.append(h("p", { class: "empty-title" }, "Prometheus is not reachable"),
          h("p", {}, `Envoy answered ${error.status || "nothing"} for /prometheus/api/v1/query. The figures appear ` +
            `here once Prometheus runs; asking again every ${EVERY_MS / 1000} s.`));
      } else {
        state.dataset.state = "error";
        state.append(problem(error, () => {}));
      }
    }
    await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
  }
}

/** Each rule's last hour: [seconds, value] points, its series summed (a line per figure). */
async function lastHour(signal) {
  const end = Math.floor(Date.now() / 1000);
  const answer = await get("/prometheus/api/v1/query_range", { query: QUERY, start: end - HOUR_S, end, step: STEP_S }, { signal });
  const sums = new Map();
  for (const series of answer.data.result) {
    const points = sums.get(series.metric.__name__) ?? new Map();
    for (const [t, v] of series.values) points.set(t, (points.get(t) ?? 0) + Number(v));
    sums.set(series.metric.__name__, points);
  }
  return new Map([...sums].map(([rule, points]) => [rule, [...points].sort(([a], [b]) => a - b)]));
}

/** The alerts Prometheus has firing or pending, or a line saying there are none. */
async function firing(signal) {
  const answer = await get("/prometheus/api/v1/alerts", {}, { signal });
  const found = (answer.data.alerts ?? []).filter((a) => a.state === "firing" || a.state === "pending")
    .sort((a, b) => (a.state === b.state ? a.labels.alertname.localeCompare(b.labels.alertname) : a.state === "firing" ? -1 : 1));
  const title = h("h2", { id: "alerts-heading" }, "Alerts");
  if (!found.length) return [title, h("p", { class: "none" }, "No alert is firing.")];
  return [title, h("ul", {}, found.map((a) => h("li", { "data-state": a.state, "data-alert": a.labels.alertname },
    h("strong", {}, a.labels.alertname), ` ${a.state}`, a.labels.severity ? ` (${a.labels.severity})` : "",
    a.activeAt ? [" since ", time(a.activeAt, clockTime(new Date(a.activeAt)))] : null,
    a.annotations?.summary ? h("p", {}, a.annotations.summary) : null)))];
}

/** A small line of the last hour's points, labelled with its range for those who cannot see it. */
function sparkline(points, digits) {
  if (!points || points.length < 2) return h("p", { class: "unit" }, "no history in the last hour yet");
  const values = points.map(([, v]) => v);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const [first] = points[0];
  const [last] = points[points.length - 1];
  const x = (t) => ((t - first) / (last - first || 1)) * 200;
  const y = (v) => 38 - ((v - low) / (high - low || 1)) * 36;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 200 40");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `The last hour: from ${figure(low, digits)} to ${figure(high, digits)}`);
  svg.dataset.points = String(points.length);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

function tile(spec, samples, history) {
  const value = (sample) => Number(sample.value[1]);
  const lines = spec.by
    ? samples.map((s) => [s.metric[spec.by] ?? "", value(s)]).sort(([a], [b]) => a.localeCompare(b))
    : [["", samples.reduce((sum, s) => sum + value(s), 0)]];
  const body = samples.length
    ? [h("dl", {}, lines.flatMap(([name, v]) => [h("dt", {}, name || spec.unit), h("dd", { class: "value" }, figure(v, spec.digits))])),
      spec.by ? h("p", { class: "unit" }, spec.unit) : null]
    : [h("p", { class: "value none" }, "no data"), h("p", { class: "unit" }, `${spec.rule} has no samples yet`)];
  return h("section", { class: "tile", "data-rule": spec.rule, "aria-label": spec.label }, h("h2", {}, spec.label), ...body,
    sparkline(history, spec.digits));
}
