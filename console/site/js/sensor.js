// A sensor: its latest readings, then for one metric type and a time range its statistics, a chart
// of its buckets with its events marked, and its events. Deep-linkable: /sensors/<id>?type=&range=
// (or &from=&to=), the URL following every change.
import { get, rfc3339 } from "./api.js";
import { drawChart } from "./chart.js";
import { empty, h, heading, time } from "./dom.js";
import { RAISED, eventRow, eventTable } from "./events.js";
import { ago, number, reading, when } from "./format.js";
import { problem } from "./problem.js";
import * as ranges from "./range.js";

export async function sensorPage(main, { signal, params: [sensorId], query }) {
  main.append(heading(`Sensor ${sensorId}`));
  // No call answers for one sensor: the list from its id on holds it first, if it exists.
  const found = await get("/v1/sensors", { sensorIdPrefix: sensorId, pageSize: 1 }, { signal });
  const sensor = found.sensors.find((s) => s.sensorId === sensorId);
  if (!sensor) {
    main.append(empty(`No readings from sensor “${sensorId}”.`,
      "A sensor appears once a reading of it is stored. Check the id, or find it in the fleet.",
      h("a", { href: "/" }, "Back to the fleet")));
    return;
  }
  const types = sensor.lastMetrics.map((m) => m.metricType);
  const view = {
    type: types.includes(query.get("type")) ? query.get("type") : types[0],
    range: ranges.fromQuery(query, Date.parse(sensor.lastSeenTime)),
  };
  const parts = { summary: h("div"), chart: h("figure", { class: "chart" }), events: h("div") };
  const panel = controls(types, view, () => show());
  main.append(latest(sensor), panel.form, parts.summary, parts.chart, parts.events);

  // The data of the view; a newer view aborts an older one still loading.
  let loading = null;
  let chart = null;
  signal.addEventListener("abort", () => chart?.destroy());
  const show = async () => {
    loading?.abort();
    loading = new AbortController();
    const own = AbortSignal.any([signal, loading.signal]);
    const params = new URLSearchParams({ type: view.type, ...ranges.toQuery(view.range) });
    history.replaceState(null, "", `${location.pathname}?${params}`);
    panel.sync();
    try {
      const { from, to } = view.range;
      const width = ranges.bucketSeconds(to - from);
      const [stats, events] = await Promise.all([
        get(`/v1/sensors/${encodeURIComponent(sensorId)}/stats`, {
          metricType: view.type, startTime: rfc3339(from), endTime: rfc3339(to), bucketWidth: `${width}s`,
        }, { signal: own }),
        get("/v1/events", { sensorId, startTime: rfc3339(from), endTime: rfc3339(to), pageSize: 1000 }, { signal: own }),
      ]);
      chart?.destroy();
      chart = null;
      parts.summary.replaceChildren(summary(stats.stats, sensor));
      // The chart marks what was raised; the changes of alarms are in the list below it.
      const eventTimes = events.events.filter((e) => e.metricType === view.type && e.kind === RAISED)
        .map((e) => Date.parse(e.readingTime));
      chart = await chartOf(parts.chart, stats.stats, width, eventTimes, view, own, (a, b) => {
        view.range = ranges.between(a, b);
        show();
      });
      parts.events.replaceChildren(eventList(events.events, sensorId));
    } catch (error) {
      if (!own.aborted) parts.summary.replaceChildren(problem(error, () => show()));
    }
  };
  await show();
}

function latest(sensor) {
  return h("section", { class: "latest", "aria-label": "Latest readings" },
    h("p", {}, "Last seen ", time(sensor.lastSeenTime, `${when(sensor.lastSeenTime)} (${ago(sensor.lastSeenTime)})`)),
    h("ul", { class: "values" }, sensor.lastMetrics.map((metric) =>
      h("li", {}, h("span", { class: "type" }, metric.metricType), " ", h("span", { class: "value" }, reading(metric))))));
}

function controls(types, view, apply) {
  const option = (value, label, selected) => h("option", { value, selected }, label);
  const metric = h("select", { id: "metric", name: "type" }, types.map((t) => option(t, t, t === view.type)));
  const preset = h("select", { id: "range", name: "range" },
    ranges.PRESETS.map((p) => option(p.name, p.label, p.name === view.range.preset)),
    option("", "Custom (from, to)", !view.range.preset));
  const from = h("input", { id: "from", type: "datetime-local", step: 60, required: true });
  const to = h("input", { id: "to", type: "datetime-local", step: 60, required: true });
  metric.addEventListener("change", () => { view.type = metric.value; apply(); });
  preset.addEventListener("change", () => {
    if (!preset.value) return from.focus();
    view.range = ranges.preset(preset.value);
    apply();
  });
  const zoomBy = (factor) => () => { view.range = ranges.zoom(view.range, factor); apply(); };
  const form = h("form", {
    class: "controls", "aria-label": "What to show",
    onsubmit: (event) => {
      event.preventDefault();
      const a = Date.parse(from.value);
      const b = Date.parse(to.value);
      if (a < b) {
        view.range = ranges.between(a, b);
        apply();
      } else {
        to.setCustomValidity("must be after From");
        to.reportValidity();
      }
    },
  },
  field("Metric", metric), field("Range", preset), field("From", from), field("To", to),
  h("button", { type: "submit" }, "Show"),
  h("div", { class: "zoom", role: "group", "aria-label": "Zoom" },
    h("button", { type: "button", onclick: zoomBy(0.5) }, "Zoom in"),
    h("button", { type: "button", onclick: zoomBy(2) }, "Zoom out"),
    h("span", {}, "or drag across the chart")));
  to.addEventListener("input", () => to.setCustomValidity(""));
  // The range's inputs show the range drawn, however it was chosen (a preset, a zoom, a drag).
  const sync = () => {
    preset.value = view.range.preset ?? "";
    from.value = ranges.localInput(view.range.from);
    to.value = ranges.localInput(view.range.to);
  };
  return { form, sync };
}

const field = (label, control) => h("div", { class: "field" }, h("label", { for: control.id }, label), control);

function summary(stats, sensor) {
  const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  if (Number(stats.count) === 0) {
    return empty(`No ${stats.metricType} readings in this range.`,
      h("span", {}, "Last seen ", time(sensor.lastSeenTime, when(sensor.lastSeenTime)), ": pick a range that holds it."));
  }
  return h("dl", { class: "stats" },
    item("Readings", Number(stats.count).toLocaleString()), item("Min", number(stats.min)),
    item("Mean", number(stats.mean)), item("Max", number(stats.max)), item("Std dev", number(stats.stddev)),
    item("p50", number(stats.p50)), item("p95", number(stats.p95)), item("p99", number(stats.p99)));
}

async function chartOf(figure, stats, width, eventTimes, view, signal, onSelect) {
  const { buckets } = stats;
  const plot = h("div", { class: "plot" });
  const filled = buckets.filter((b) => Number(b.count) > 0);
  const minutes = width / 60;
  figure.replaceChildren(plot, h("figcaption", {},
    `${view.type}: the mean of each ${minutes >= 60 ? `${minutes / 60} h` : `${minutes} min`} bucket (line and points) ` +
    `with its min–max band; ${filled.length} of ${buckets.length} buckets hold readings.` +
    (eventTimes.length ? ` Dashed red lines: ${eventTimes.length} ${eventTimes.length === 1 ? "event" : "events"}.` : "")),
  bucketTable(filled));
  // The unit the readings carry, if any, names the values' axis.
  const unit = stats.lastReading?.unit ?? "";
  return drawChart(plot, { buckets, unit, eventTimes, range: view.range, onSelect, signal });
}

// The chart's numbers for those who cannot see it (and for tests).
function bucketTable(buckets) {
  return h("details", {}, h("summary", {}, "The buckets as a table"),
    h("table", { class: "buckets" },
      h("thead", {}, h("tr", {}, ["Bucket start", "Readings", "Min", "Mean", "Max"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, buckets.map((b) => h("tr", {},
        h("td", {}, time(b.startTime, when(b.startTime))), h("td", { class: "number" }, Number(b.count).toLocaleString()),
        h("td", { class: "number" }, number(b.min)), h("td", { class: "number" }, number(b.mean)),
        h("td", { class: "number" }, number(b.max)))))));
}

function eventList(events, sensorId) {
  if (!events.length) return empty("No events in this range.");
  return eventTable(`Events of ${sensorId} in this range, newest first`,
    h("tbody", {}, events.map((e) => eventRow(e, { withSensor: false }))), { withSensor: false });
}
