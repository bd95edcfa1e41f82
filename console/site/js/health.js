// Pipeline health: Prometheus's recording rules for the pipeline, read through Envoy
// (/prometheus/api/v1/query), every few seconds while the page is open.
import { ApiError, get } from "./api.js";
import { h, heading } from "./dom.js";
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
// Envoy's answers when Prometheus is not routed (404), not running (503) or failing (502, 504).
const UNREACHABLE = new Set([0, 404, 502, 503, 504]);

export async function healthPage(main, { signal }) {
  const state = h("div", { class: "health-state", role: "status" });
  const tiles = h("div", { class: "tiles" });
  main.append(heading("Pipeline health"), state, tiles);
  while (!signal.aborted) {
    try {
      const answer = await get("/prometheus/api/v1/query", { query: QUERY }, { signal });
      const samples = answer.data.result;
      tiles.replaceChildren(...FIGURES.map((f) => tile(f, samples.filter((s) => s.metric.__name__ === f.rule))));
      state.dataset.state = "reachable";
      state.textContent = `From Prometheus, updated at ${clockTime(new Date())}, every ${EVERY_MS / 1000} s.`;
    } catch (error) {
      if (signal.aborted) return;
      tiles.replaceChildren();
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

function tile(spec, samples) {
  const value = (sample) => Number(sample.value[1]);
  const lines = spec.by
    ? samples.map((s) => [s.metric[spec.by] ?? "", value(s)]).sort(([a], [b]) => a.localeCompare(b))
    : [["", samples.reduce((sum, s) => sum + value(s), 0)]];
  const body = samples.length
    ? [h("dl", {}, lines.flatMap(([name, v]) => [h("dt", {}, name || spec.unit), h("dd", { class: "value" }, figure(v, spec.digits))])),
      spec.by ? h("p", { class: "unit" }, spec.unit) : null]
    : [h("p", { class: "value none" }, "no data"), h("p", { class: "unit" }, `${spec.rule} has no samples yet`)];
  return h("section", { class: "tile", "data-rule": spec.rule, "aria-label": spec.label }, h("h2", {}, spec.label), ...body);
}
