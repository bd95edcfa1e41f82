// The fleet: every sensor with its latest reading of each metric type and when it was last seen,
// found by the start of its id, a page at a time (the API's page tokens).
import { get } from "./api.js";
import { empty, h, heading, time } from "./dom.js";
import { ago, reading } from "./format.js";
import { pager, prefixSearch } from "./listing.js";
import { silentDevices } from "./silent.js";

const PAGE_SIZE = 50;

export async function fleetPage(main, { signal, query, navigate }) {
  const prefix = query.get("prefix") ?? "";
  const search = prefixSearch({ label: "Sensor id starts with", path: "/", prefix, navigate });
  const results = h("div", { class: "results" });
  // Registered devices that went silent (silence rules), said above the sensors.
  const silence = h("div", { class: "silence", role: "status" });
  // A searched prefix is a group: its sensors charted together on the Groups page.
  const group = prefix ? h("p", {}, h("a", { href: `/groups?${new URLSearchParams({ prefix })}` }, `Chart ${prefix}* as a group`)) : null;
  main.append(heading("Fleet"), silence, search, group ?? "", results);
  silentDevices({ signal }).then((silent) => {
    if (silent.size) {
      // Text, not a link: the Devices page (in the navigation) marks which.
      silence.append(h("p", {}, `${silent.size} registered device${silent.size === 1 ? " is" : "s are"} silent `
        + "(no reading for their silence rule's time): the Devices page marks them."));
    }
  }).catch(() => {}); // the page is whole without it (AlarmsService answers on the processor)

  // The token of each page seen so far: "Previous" goes back through them.
  const tokens = [""];
  let index = 0;
  const load = async (to, focus) => {
    const answer = await get("/v1/sensors", { sensorIdPrefix: prefix, pageSize: PAGE_SIZE, pageToken: tokens[to] }, { signal });
    index = to;
    tokens[index + 1] = answer.nextPageToken;
    results.replaceChildren(...table(answer.sensors, prefix, index),
      pager({ label: "Pages of sensors", index, answer, load, results, signal }));
    if (focus) results.querySelector(`[data-pager="${focus}"]:not([disabled])`)?.focus() ?? results.querySelector("table")?.focus();
  };
  await load(0);
}

function table(sensors, prefix, index) {
  if (!sensors.length && index === 0) {
    return [empty(prefix ? `No sensor id starts with “${prefix}”.` : "No sensors yet.",
      "A sensor appears here once a reading of it is stored.")];
  }
  const first = index * PAGE_SIZE + 1;
  const now = Date.now();
  return [h("table", { class: "fleet", tabindex: "-1" },
    h("caption", {}, `Sensors ${first}–${first + sensors.length - 1}`, prefix ? ` starting with “${prefix}”` : ""),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Sensor"), h("th", { scope: "col" }, "Last seen"),
      h("th", { scope: "col" }, "Latest values"))),
    h("tbody", {}, sensors.map((sensor) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `/sensors/${encodeURIComponent(sensor.sensorId)}` }, sensor.sensorId)),
      h("td", {}, time(sensor.lastSeenTime, ago(sensor.lastSeenTime, now))),
      h("td", {}, h("ul", { class: "values" }, sensor.lastMetrics.map((metric) =>
        h("li", {}, h("span", { class: "type" }, metric.metricType), " ", h("span", { class: "value" }, reading(metric))))))))))];
}
