// A table of events, shared by the live page and a sensor's page.
import { h, time } from "./dom.js";
import { number, when } from "./format.js";

export const RAISED = "EVENT_KIND_THRESHOLD_EXCEEDED";

/** What happened: the rule that raised the event, or the change of its alarm. */
function what(event) {
  switch (event.kind) {
    case "EVENT_KIND_ALARM_CLEARED":
      return `alarm cleared by ${event.alarm?.clearedBy || "its rule"}`;
    case "EVENT_KIND_ALARM_ACKNOWLEDGED":
      return `alarm acknowledged by ${event.alarm?.acknowledgedBy || "someone"}`;
    default:
      return `≥ ${number(event.threshold)} × ${event.count}`;
  }
}

/** A <tbody> row of an event; `withSensor` adds a link to its sensor. */
export function eventRow(event, { withSensor = true } = {}) {
  return h("tr", { "data-event-id": event.eventId, "data-kind": event.kind },
    h("td", {}, time(event.readingTime, when(event.readingTime))),
    withSensor && h("td", {}, h("a", { href: `/sensors/${encodeURIComponent(event.sensorId)}` }, event.sensorId)),
    h("td", {}, event.metricType),
    h("td", { class: "number" }, number(event.value)),
    h("td", { class: "number" }, what(event)));
}

/** The table around event rows, with a caption. */
export function eventTable(caption, body, { withSensor = true } = {}) {
  const column = (label, numeric) => h("th", { scope: "col", class: numeric ? "number" : null }, label);
  return h("table", { class: "events" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, column("Reading time"), withSensor && column("Sensor"), column("Metric"),
      column("Value", true), column("Rule", true))),
    body);
}
