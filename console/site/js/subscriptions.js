// The webhook subscriptions (SubscriptionsService): each with its filters and how delivery goes
// (healthy, failing or dead-lettered; what failed last; how many wait, were given up on, went
// through), its latest deliveries on demand, and Resume for a dead-lettered one. Every call of this
// page takes the admin scope on the TLS port.
import { ApiError, get, post } from "./api.js";
import { empty, h, heading, time } from "./dom.js";
import { SEVERITIES, number, when } from "./format.js";
import { problem } from "./problem.js";

const STATES = {
  DELIVERY_STATE_HEALTHY: "Healthy",
  DELIVERY_STATE_FAILING: "Failing",
  DELIVERY_STATE_DEAD_LETTERED: "Dead-lettered",
};
const OUTCOMES = {
  DELIVERY_OUTCOME_PENDING: "waiting",
  DELIVERY_OUTCOME_DELIVERED: "delivered",
  DELIVERY_OUTCOME_DEAD_LETTERED: "dead-lettered",
};
const KINDS = {
  EVENT_KIND_THRESHOLD_EXCEEDED: "raised",
  EVENT_KIND_ALARM_CLEARED: "cleared",
  EVENT_KIND_ALARM_ACKNOWLEDGED: "acknowledged",
  EVENT_KIND_DEVICE_SILENT: "device silent",
};
// Deliveries shown when a subscription's are opened.
const LATEST = 10;

export async function subscriptionsPage(main, { signal }) {
  const said = h("p", { class: "action-state", role: "status" });
  const results = h("div", { class: "results" });
  main.append(heading("Notifications"), said, results);
  const load = async () => {
    const subscriptions = [];
    let pageToken = "";
    do {
      const answer = await get("/v1/subscriptions", { pageSize: 1000, pageToken }, { signal });
      subscriptions.push(...(answer.subscriptions ?? []));
      pageToken = answer.nextPageToken;
    } while (pageToken);
    results.replaceChildren(...listing(subscriptions, { said, signal, reload: load }));
  };
  await load();
}

function listing(subscriptions, context) {
  if (!subscriptions.length) {
    return [empty("No webhook subscriptions.",
      "POST /v1/subscriptions sends the events that match its filters to a URL of yours (docs/rules-and-alarms.md).")];
  }
  return subscriptions.map((s) => card(s, context));
}

function filters(subscription) {
  const parts = [subscription.sensorIdPrefix ? `sensors ${subscription.sensorIdPrefix}*` : "every sensor"];
  parts.push(subscription.kinds?.length ? subscription.kinds.map((k) => KINDS[k] ?? k).join(", ") : "every kind");
  if (subscription.minimumSeverity && subscription.minimumSeverity !== "SEVERITY_UNSPECIFIED") {
    parts.push(`${(SEVERITIES[subscription.minimumSeverity] ?? subscription.minimumSeverity).toLowerCase()} or worse`);
  }
  return parts.join(" · ");
}

function card(subscription, { said, signal, reload }) {
  const d = subscription.delivery ?? {};
  const state = d.state ?? "DELIVERY_STATE_HEALTHY";
  const resume = state === "DELIVERY_STATE_DEAD_LETTERED" ? h("button", {
    type: "button", "aria-label": `Resume the subscription to ${subscription.url}`,
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await post(`/v1/subscriptions/${subscription.subscriptionId}:resume`, {}, { signal });
        said.textContent = `Resumed: ${number(Number(d.deadLetteredCount))} dead-lettered event(s) go to ${subscription.url} again.`;
        await reload();
      } catch (error) {
        if (signal.aborted) return;
        event.target.disabled = false;
        said.textContent = `Not resumed: ${error instanceof ApiError ? error.message : error}`;
      }
    },
  }, "Resume") : null;
  const facts = [
    ["Delivered", number(Number(d.deliveredCount ?? 0))],
    ["Waiting", number(d.pendingCount ?? 0)],
    ["Dead-lettered", number(d.deadLetteredCount ?? 0)],
    ["Last success", d.lastSuccessTime ? time(d.lastSuccessTime, when(d.lastSuccessTime)) : "never"],
    ["Last failure", d.lastFailureTime ? [time(d.lastFailureTime, when(d.lastFailureTime)), `: ${d.lastError}`] : "none"],
  ];
  if (d.consecutiveFailures) facts.push(["Failures in a row", number(d.consecutiveFailures)]);
  if (d.deadLetterTime) facts.push(["Dead-lettered at", time(d.deadLetterTime, when(d.deadLetterTime))]);
  const latest = h("div", { class: "deliveries" });
  const details = h("details", {}, h("summary", {}, "Latest deliveries"), latest);
  details.addEventListener("toggle", () => {
    if (details.open) {
      deliveries(subscription, latest, signal).catch((error) => signal.aborted || latest.replaceChildren(problem(error, () => details.dispatchEvent(new Event("toggle")))));
    }
  });
  return h("section", { class: "subscription", "data-state": state, "aria-label": subscription.url },
    h("h2", {}, subscription.url),
    h("p", { class: "filters" }, filters(subscription)),
    h("p", { class: "delivery-state" }, h("strong", {}, STATES[state] ?? state), resume ? " " : null, resume),
    h("dl", { class: "stats" }, facts.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value)))),
    details);
}

async function deliveries(subscription, into, signal) {
  into.replaceChildren(h("p", {}, "Loading…"));
  const answer = await get(`/v1/subscriptions/${subscription.subscriptionId}/deliveries`, { pageSize: LATEST }, { signal });
  const rows = answer.deliveries ?? [];
  if (!rows.length) {
    into.replaceChildren(h("p", {}, "No deliveries kept: none yet, or delivered ones older than the notifier keeps."));
    return;
  }
  into.replaceChildren(h("table", { class: "deliveries" },
    h("caption", {}, `The latest ${rows.length} deliveries, the most recent event first`),
    h("thead", {}, h("tr", {}, ["Event", "Sensor", "What", "Outcome", "Attempts", "Last error", "Delivered"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((delivery) => h("tr", { "data-outcome": delivery.outcome },
      h("td", {}, time(delivery.event.readingTime, when(delivery.event.readingTime))),
      h("td", {}, h("a", { href: `/sensors/${encodeURIComponent(delivery.event.sensorId)}` }, delivery.event.sensorId)),
      h("td", {}, `${delivery.event.metricType || ""} ${KINDS[delivery.event.kind] ?? delivery.event.kind}`),
      h("td", { class: "outcome" }, OUTCOMES[delivery.outcome] ?? delivery.outcome,
        delivery.nextAttemptTime ? [", next try ", time(delivery.nextAttemptTime, when(delivery.nextAttemptTime))] : null),
      h("td", { class: "number" }, number(delivery.attempts)),
      h("td", {}, delivery.lastError || "—"),
      h("td", {}, delivery.deliverTime ? time(delivery.deliverTime, when(delivery.deliverTime)) : "—"))))));
}
