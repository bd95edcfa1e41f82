// A group of sensors (those whose id starts with a prefix): one metric over a range, from the
// assessor's AggregateSensors: the group's mean per bucket with its min–max band, how many sensors
// reported in each, and the sensors of the highest mean. Deep-linkable: /groups?prefix=&type=&range=.
import { get, rfc3339 } from "./api.js";
import { drawChart } from "./chart.js";
import { empty, h, heading, time } from "./dom.js";
import { number, when } from "./format.js";
import { problem } from "./problem.js";

const HOUR_S = 3600;
// Each range with its buckets: minute rollups for ranges up to 6 hours, hourly ones beyond.
const RANGES = [
  { name: "6h", label: "Last 6 hours", hours: 6, width: 15 * 60 },
  { name: "24h", label: "Last 24 hours", hours: 24, width: HOUR_S },
  { name: "7d", label: "Last 7 days", hours: 7 * 24, width: 6 * HOUR_S },
  { name: "30d", label: "Last 30 days", hours: 30 * 24, width: 24 * HOUR_S },
];
const TOP = 10;

export async function groupsPage(main, { signal, query, navigate }) {
  main.append(heading("Groups"));
  const wanted = {
    prefix: query.get("prefix") ?? "",
    type: query.get("type") ?? "",
    range: RANGES.find((r) => r.name === query.get("range")) ?? RANGES[1],
  };
  // The metric types the group's first sensors report, to choose from.
  const sensors = wanted.prefix ? await get("/v1/sensors", { sensorIdPrefix: wanted.prefix, pageSize: 100 }, { signal }) : { sensors: [] };
  const types = [...new Set(sensors.sensors.flatMap((s) => s.lastMetrics.map((m) => m.metricType)))].sort();
  if (!wanted.type && types.length) wanted.type = types[0];
  main.append(form(wanted, types, navigate));
  if (!wanted.prefix || !wanted.type) {
    main.append(empty("Choose a group: the start of its sensors' ids, e.g. plant-7-.",
      "The page charts the group's readings of one metric across its sensors, and ranks the sensors."));
    return;
  }
  const result = h("div", { class: "group" });
  main.append(result);
  const to = Date.now();
  const from = to - wanted.range.hours * HOUR_S * 1000;
  const answer = await get("/v1/sensors:aggregate", {
    sensorIdPrefix: wanted.prefix, metricType: wanted.type, startTime: rfc3339(from), endTime: rfc3339(to),
    bucketWidth: `${wanted.range.width}s`, topCount: TOP,
  }, { signal });
  const stats = answer.stats;
  if (Number(stats.count) === 0) {
    result.replaceChildren(empty(`No ${wanted.type} readings of sensors ${wanted.prefix}* in this range.`));
    return;
  }
  const figure = h("figure", { class: "chart" });
  result.replaceChildren(summary(stats), figure, top(stats));
  const plot = h("div", { class: "plot" });
  const filled = stats.buckets.filter((b) => Number(b.count) > 0);
  figure.append(plot, h("figcaption", {},
    `${wanted.type} of sensors ${wanted.prefix}*: the mean of each ${wanted.range.width >= HOUR_S ? `${wanted.range.width / HOUR_S} h` : `${wanted.range.width / 60} min`} `
    + `bucket across the group (line and points) with its min–max band; ${filled.length} of ${stats.buckets.length} buckets hold readings.`),
  bucketTable(filled));
  const chart = await drawChart(plot, {
    buckets: stats.buckets, unit: "", eventTimes: [],
    range: { from: Date.parse(stats.startTime), to: Date.parse(stats.endTime) }, onSelect: () => {}, signal,
  }).catch((error) => { figure.append(problem(error)); return null; });
  signal.addEventListener("abort", () => chart?.destroy());
}

function form(wanted, types, navigate) {
  const prefix = h("input", { id: "group-prefix", type: "search", value: wanted.prefix, autocomplete: "off", spellcheck: "false", placeholder: "e.g. plant-7-" });
  const type = h("input", { id: "group-type", type: "text", value: wanted.type, list: "group-types", autocomplete: "off", spellcheck: "false" });
  const range = h("select", { id: "group-range" }, RANGES.map((r) => h("option", { value: r.name, selected: r === wanted.range }, r.label)));
  return h("form", {
    class: "controls", role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      const params = new URLSearchParams({ prefix: prefix.value.trim(), range: range.value });
      if (type.value.trim()) params.set("type", type.value.trim());
      navigate(`/groups?${params}`);
    },
  },
  h("div", { class: "field" }, h("label", { for: "group-prefix" }, "Sensor id starts with"), prefix),
  h("div", { class: "field" }, h("label", { for: "group-type" }, "Metric"), type,
    h("datalist", { id: "group-types" }, types.map((t) => h("option", { value: t })))),
  h("div", { class: "field" }, h("label", { for: "group-range" }, "Range"), range),
  h("button", { type: "submit" }, "Show"));
}

function summary(stats) {
  const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  return h("dl", { class: "stats", "aria-label": "The group over the range" },
    item("Sensors", number(stats.sensorCount)), item("Readings", Number(stats.count).toLocaleString()),
    item("Min", number(stats.min)), item("Mean", number(stats.mean)), item("Max", number(stats.max)));
}

function top(stats) {
  const range = new URLSearchParams({ type: stats.metricType, from: stats.startTime, to: stats.endTime });
  return h("table", { class: "top-sensors" },
    h("caption", {}, `The ${stats.topSensors.length} sensors of the highest mean`),
    h("thead", {}, h("tr", {}, ["Sensor", "Mean", "Min", "Max", "Readings"].map((c, i) => h("th", { scope: "col", class: i ? "number" : null }, c)))),
    h("tbody", {}, stats.topSensors.map((s) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `/sensors/${encodeURIComponent(s.sensorId)}?${range}` }, s.sensorId)),
      h("td", { class: "number" }, number(s.mean)), h("td", { class: "number" }, number(s.min)),
      h("td", { class: "number" }, number(s.max)), h("td", { class: "number" }, Number(s.count).toLocaleString())))));
}

// The chart's numbers for those who cannot see it (and for tests).
function bucketTable(buckets) {
  return h("details", {}, h("summary", {}, "The buckets as a table"),
    h("table", { class: "buckets" },
      h("thead", {}, h("tr", {}, ["Bucket start", "Sensors", "Readings", "Min", "Mean", "Max"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, buckets.map((b) => h("tr", {},
        h("td", {}, time(b.startTime, when(b.startTime))), h("td", { class: "number" }, number(b.sensorCount)),
        h("td", { class: "number" }, Number(b.count).toLocaleString()), h("td", { class: "number" }, number(b.min)),
        h("td", { class: "number" }, number(b.mean)), h("td", { class: "number" }, number(b.max)))))));
}
