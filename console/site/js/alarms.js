// The alarms across the fleet (AlarmsService): filtered by state, severity, acknowledgement, rule and
// the start of the sensor id, all kept in the page's URL; counts by severity above them; acknowledged
// and cleared one at a time or all those selected; each linked to its sensor's chart at its time.
// The page follows the events stream: an alarm raised, acknowledged or cleared anywhere shows at once.
import { ADMIN_NEEDED, ApiError, allows, get, post, watch } from "./api.js";
import { empty, h, heading, time } from "./dom.js";
import { SEVERITIES, condition, number, when } from "./format.js";
import { pager } from "./listing.js";
import { problem } from "./problem.js";

const PAGE_SIZE = 50;
const STATES = { active: "ALARM_STATE_ACTIVE", cleared: "ALARM_STATE_CLEARED", any: "" };
const ACKNOWLEDGED = { any: undefined, no: "false", yes: "true" };
// The events that change an alarm: the page reloads (once for a burst) when one comes.
const ALARM_KINDS = new Set(["EVENT_KIND_THRESHOLD_EXCEEDED", "EVENT_KIND_ALARM_CLEARED", "EVENT_KIND_ALARM_ACKNOWLEDGED",
  "EVENT_KIND_DEVICE_SILENT"]);
const RELOAD_MS = 300;
// The list is what the saver stored, which follows the stream by its latency: each change is read
// again this much later too, so that a slow store still shows.
const AGAIN_MS = 2000;
// Acts on many alarms go this many at a time.
const AT_ONCE = 8;
// A sensor's chart around an alarm: from this long before it was raised to this long after it ended.
const AROUND_MS = 30 * 60_000;

/** The filters of the page's URL, each with its default. */
function filters(query) {
  const pick = (name, choices, fallback) => (query.get(name) in choices ? query.get(name) : fallback);
  return {
    state: pick("state", STATES, "active"),
    acknowledged: pick("acknowledged", ACKNOWLEDGED, "any"),
    severity: query.get("severity") in SEVERITIES ? query.get("severity") : "",
    rule: query.get("rule") ?? "",
    prefix: query.get("prefix") ?? "",
  };
}

function href(wanted) {
  const defaults = { state: "active", acknowledged: "any" };
  const params = Object.entries(wanted).filter(([name, value]) => value && value !== defaults[name]);
  return params.length ? `/alarms?${new URLSearchParams(params)}` : "/alarms";
}

export async function alarmsPage(main, { signal, query, navigate }) {
  const wanted = filters(query);
  const said = h("p", { class: "action-state", role: "status" });
  const counts = h("nav", { class: "severities", "aria-label": "Severities" });
  const results = h("div", { class: "results" });
  const live = h("p", { class: "stream-state" }, "Connecting to the events stream…");
  const rules = await get("/v1/rules", { pageSize: 1000 }, { signal }).then((a) => a.rules ?? [], () => []);
  main.append(heading("Alarms"), form(wanted, rules, navigate), counts, live, said, results);

  const selected = new Set();
  const tokens = [""];
  let index = 0;
  const params = (to) => ({
    state: STATES[wanted.state], acknowledged: ACKNOWLEDGED[wanted.acknowledged], severity: wanted.severity,
    ruleId: wanted.rule, sensorIdPrefix: wanted.prefix, pageSize: PAGE_SIZE, pageToken: tokens[to],
    countBySeverity: to === 0 ? "true" : undefined,
  });
  const load = async (to, focus) => {
    const answer = await get("/v1/alarms", params(to), { signal });
    index = to;
    tokens[index + 1] = answer.nextPageToken;
    if (to === 0) counts.replaceChildren(...severityLinks(wanted, answer.severityCounts ?? []));
    const alarms = answer.alarms ?? [];
    for (const id of [...selected]) if (!alarms.some((a) => a.alarmId === id)) selected.delete(id);
    results.replaceChildren(...table(alarms, { index, selected, act, wanted, rules }),
      pager({ label: "Pages of alarms", index, answer, load, results, signal }));
    if (focus) results.querySelector(`[data-pager="${focus}"]:not([disabled])`)?.focus();
  };

  /** Acknowledges or clears the alarms `ids`, AT_ONCE at a time; says how it went, then reloads. */
  const act = async (verb, ids) => {
    said.textContent = `${verb === "acknowledge" ? "Acknowledging" : "Clearing"} ${ids.length} alarm(s)…`;
    const failures = [];
    const queue = [...ids];
    const worker = async () => {
      for (let id = queue.shift(); id; id = queue.shift()) {
        await post(`/v1/alarms/${id}:${verb}`, {}, { signal }).catch((error) => {
          if (!signal.aborted) failures.push(error instanceof ApiError ? error.message : String(error));
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(AT_ONCE, ids.length) }, worker));
    if (signal.aborted) return;
    const done = ids.length - failures.length;
    const past = verb === "acknowledge" ? "acknowledged" : "cleared";
    said.textContent = failures.length
      ? `${done} of ${ids.length} alarm(s) ${past}; not ${past}: ${[...new Set(failures)].join("; ")}`
      : `${done} alarm(s) ${past}.`;
    selected.clear();
    await load(index);
  };

  await load(0);
  follow({ signal, live, reload: () => load(index).catch((error) => signal.aborted || results.append(problem(error, () => load(index)))) });
}

/** Reloads the page (once for a burst, and once more a little later) whenever an event changes an
 * alarm, and when the stream (re)opens. */
function follow({ signal, live, reload }) {
  let timer = null;
  let again = null;
  signal.addEventListener("abort", () => { clearTimeout(timer); clearTimeout(again); });
  const changed = (delay) => {
    clearTimeout(again);
    again = setTimeout(reload, delay + AGAIN_MS);
    if (!timer) timer = setTimeout(() => { timer = null; reload(); }, delay);
  };
  watch("/v1/events:watch", {}, {
    signal,
    onMessage: ({ event }) => {
      if (ALARM_KINDS.has(event.kind)) changed(RELOAD_MS);
    },
    onState: (name, error) => {
      live.dataset.state = name;
      if (name === "open") {
        live.textContent = "Live: alarms raised, acknowledged or cleared show here as they happen.";
        changed(0); // what changed while the stream was away
      } else if (name === "retrying") {
        live.textContent = "The events stream broke; reconnecting…";
      } else {
        live.replaceChildren(problem(error, () => location.reload()));
      }
    },
  });
}

function form(wanted, rules, navigate) {
  const choice = (name, label, options, value) => {
    const select = h("select", { id: `alarms-${name}`, name },
      options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)));
    return [h("label", { for: `alarms-${name}` }, label), select];
  };
  const ruleOptions = [["", "Every rule"], ...rules.map((r) => [r.ruleId, ruleName(r)])];
  if (wanted.rule && !rules.some((r) => r.ruleId === wanted.rule)) ruleOptions.push([wanted.rule, wanted.rule]);
  const prefix = h("input", {
    id: "alarms-prefix", name: "prefix", type: "search", value: wanted.prefix, autocomplete: "off",
    spellcheck: "false", placeholder: "e.g. plant-7-",
  });
  const fields = h("form", {
    class: "filters", role: "search", action: "/alarms", method: "get",
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      navigate(href({ ...Object.fromEntries(data), prefix: prefix.value.trim(), severity: wanted.severity }));
    },
  },
  ...choice("state", "State", [["active", "Active"], ["cleared", "Cleared"], ["any", "Active or cleared"]], wanted.state),
  ...choice("acknowledged", "Acknowledged", [["any", "Either"], ["no", "Not acknowledged"], ["yes", "Acknowledged"]],
    wanted.acknowledged),
  ...choice("rule", "Rule", ruleOptions, wanted.rule),
  h("label", { for: "alarms-prefix" }, "Sensor id starts with"), prefix,
  h("button", { type: "submit" }, "Show"));
  return fields;
}

function ruleName(rule) {
  const prefix = rule.sensorIdPrefix || rule.silence?.deviceIdPrefix;
  return `${condition(rule)} · ${prefix ? `${prefix}*` : "every sensor"} · ${rule.ruleId}`;
}

/** "All n" and a link per severity with its count; the chosen one marked. */
function severityLinks(wanted, counted) {
  const total = counted.reduce((sum, c) => sum + Number(c.count), 0);
  const link = (severity, label, count) => h("a", {
    href: href({ ...wanted, severity }), "aria-current": wanted.severity === severity ? "page" : null,
    class: `severity ${severity.toLowerCase().replace("severity_", "")}`,
  }, `${label} `, h("span", { class: "count" }, number(count)));
  return [h("ul", {},
    h("li", {}, link("", "All", total)),
    ...counted.map((c) => h("li", {}, link(c.severity, SEVERITIES[c.severity] ?? c.severity, Number(c.count)))))];
}

function table(alarms, { index, selected, act, wanted, rules }) {
  if (!alarms.length && index === 0) {
    return [empty(wanted.state === "active" ? "No active alarm matches." : "No alarm matches.",
      "Alarms are raised by rules (POST /v1/rules) when a sensor's readings meet their condition.")];
  }
  const admin = allows("admin");
  const first = index * PAGE_SIZE + 1;
  const bulk = (verb, label) => h("button", {
    type: "button", disabled: true, "data-bulk": verb, title: admin ? null : ADMIN_NEEDED,
    onclick: (event) => { event.target.disabled = true; act(verb, [...selected]); },
  }, label);
  const acknowledgeAll = bulk("acknowledge", "Acknowledge selected");
  const clearAll = bulk("clear", "Clear selected");
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select every alarm of this page", disabled: !admin });
  const boxes = [];
  const refresh = () => {
    acknowledgeAll.disabled = !admin || !selected.size;
    clearAll.disabled = !admin || !selected.size;
    selectAll.checked = boxes.length > 0 && boxes.every((b) => b.checked);
  };
  selectAll.addEventListener("change", () => {
    for (const box of boxes) {
      box.checked = selectAll.checked;
      if (box.checked) selected.add(box.value); else selected.delete(box.value);
    }
    refresh();
  });
  const rows = alarms.map((alarm) => {
    const box = h("input", {
      type: "checkbox", value: alarm.alarmId, checked: selected.has(alarm.alarmId), disabled: !admin,
      "aria-label": `Select the alarm of ${alarm.sensorId} raised ${when(alarm.raiseTime)}`,
    });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(alarm.alarmId); else selected.delete(alarm.alarmId);
      refresh();
    });
    boxes.push(box);
    return row(alarm, box, act, admin, rules.find((r) => r.ruleId === alarm.ruleId));
  });
  const toolbar = h("div", { class: "toolbar" }, acknowledgeAll, clearAll,
    admin ? null : h("span", { class: "note" }, `Acknowledging and clearing ${ADMIN_NEEDED}.`));
  refresh();
  return [toolbar, h("table", { class: "alarms", tabindex: "-1" },
    h("caption", {}, `Alarms ${first}–${first + alarms.length - 1}, most recently raised first`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, selectAll),
      ...["Severity", "Sensor", "Rule", "Raised", "Matches", "State", "Acknowledged", ""].map((name) =>
        h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows))];
}

function row(alarm, box, act, admin, rule) {
  const silent = !alarm.metricType; // a silence rule's: its sensorId is the device's id
  const active = alarm.state === "ALARM_STATE_ACTIVE";
  const button = (verb, label, why) => h("button", {
    type: "button", disabled: Boolean(why), title: why,
    "aria-label": `${label} the alarm of ${alarm.sensorId} raised ${when(alarm.raiseTime)}`,
    onclick: (event) => { event.target.disabled = true; act(verb, [alarm.alarmId]); },
  }, label);
  const actions = [
    alarm.acknowledged ? null : button("acknowledge", "Acknowledge", admin ? null : ADMIN_NEEDED),
    !active ? null : button("clear", "Clear",
      !admin ? ADMIN_NEEDED : silent ? "clears when the device sends a reading again" : null),
  ];
  const raised = Date.parse(alarm.raiseTime);
  const ended = alarm.clearTime ? Date.parse(alarm.clearTime) : Math.max(raised, Date.parse(alarm.lastMatchTime || alarm.raiseTime));
  const chart = silent
    ? `/devices?prefix=${encodeURIComponent(alarm.sensorId)}`
    : `/sensors/${encodeURIComponent(alarm.sensorId)}?${new URLSearchParams({
      type: alarm.metricType, from: new Date(raised - AROUND_MS).toISOString(), to: new Date(ended + AROUND_MS).toISOString(),
    })}`;
  const severity = alarm.severity || "SEVERITY_UNSPECIFIED";
  return h("tr", { "data-alarm-id": alarm.alarmId, "data-state": active ? "active" : "cleared" },
    h("td", {}, box),
    h("td", { class: `severity ${severity.toLowerCase().replace("severity_", "")}` }, SEVERITIES[severity] ?? severity),
    h("th", { scope: "row" }, h("a", { href: chart }, alarm.sensorId)),
    h("td", {}, rule ? condition(rule) : silent ? "silent device" : `${alarm.metricType}, threshold ${number(alarm.threshold)}`,
      h("span", { class: "rule-id" }, ` ${alarm.ruleId}`)),
    h("td", {}, time(alarm.raiseTime, when(alarm.raiseTime)), silent ? null : ` at ${number(alarm.raiseValue)}`),
    h("td", { class: "number" }, silent ? "–" : number(Number(alarm.matchCount))),
    h("td", {}, active ? "Active" : ["Cleared ", time(alarm.clearTime, when(alarm.clearTime)), ` by ${alarm.clearedBy}`]),
    h("td", {}, alarm.acknowledged
      ? [alarm.acknowledgedBy, " ", time(alarm.acknowledgeTime, when(alarm.acknowledgeTime))] : "—"),
    h("td", { class: "actions" }, actions));
}
