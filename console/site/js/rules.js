// The rules (RulesService): listed with what each watches; created and edited in a form that shows
// the server's objections next to the fields they name; enabled, disabled and deleted from the list.
// A threshold rule's form previews, over a sensor's last day, where the rule would have raised and
// cleared its alarm (rule-preview.js, from the readings the API returns).
import { ADMIN_NEEDED, ApiError, allows, get, send } from "./api.js";
import { drawChart } from "./chart.js";
import { empty, h, heading, time } from "./dom.js";
import { COMPARISONS, SEVERITIES, condition, number, when } from "./format.js";
import { problem } from "./problem.js";
import { preview } from "./rule-preview.js";

const DAY_MS = 86_400_000;
// The preview reads at most this many readings (pages of 10,000).
const PREVIEW_READINGS = 50_000;

// --- the list ---------------------------------------------------------------------------------------

export async function rulesPage(main, { signal, query }) {
  const admin = allows("admin");
  const said = h("p", { class: "action-state", role: "status" }, query.get("done") ?? "");
  const results = h("div", { class: "results" });
  main.append(heading("Rules"),
    h("p", {}, admin ? h("a", { class: "button", href: "/rules/new" }, "New rule") : h("span", { class: "note" }, `Creating rules ${ADMIN_NEEDED}.`)),
    said, results);
  const load = async () => {
    const rules = [];
    let pageToken = "";
    do {
      const answer = await get("/v1/rules", { pageSize: 1000, pageToken }, { signal });
      rules.push(...(answer.rules ?? []));
      pageToken = answer.nextPageToken;
    } while (pageToken);
    results.replaceChildren(...listing(rules, { admin, said, signal, reload: load }));
  };
  await load();
}

function listing(rules, { admin, said, signal, reload }) {
  if (!rules.length) {
    return [empty("No rules yet.", "A rule raises an alarm when a sensor's readings meet its condition.",
      admin ? h("a", { href: "/rules/new" }, "Create one") : null)];
  }
  return [h("table", { class: "rules" },
    h("caption", {}, `${rules.length} rule(s), oldest first`),
    h("thead", {}, h("tr", {}, ...["Rule", "Sensors", "Severity", "Raises", "Clears", "State", "Changed", ""].map((name) =>
      h("th", { scope: "col" }, name)))),
    h("tbody", {}, rules.map((rule) => row(rule, { admin, said, signal, reload }))))];
}

function row(rule, { admin, said, signal, reload }) {
  const enabled = rule.enabled !== false;
  const act = async (button, work, done) => {
    button.disabled = true;
    try {
      await work();
      said.textContent = done;
      await reload();
    } catch (error) {
      if (signal.aborted) return;
      said.textContent = `${rule.ruleId}: ${error instanceof ApiError ? error.message : error}`;
      button.disabled = false;
    }
  };
  const toggle = h("button", {
    type: "button", disabled: !admin, title: admin ? null : ADMIN_NEEDED,
    "aria-label": `${enabled ? "Disable" : "Enable"} rule ${rule.ruleId}`,
    onclick: (event) => act(event.target,
      () => send("PATCH", `/v1/rules/${rule.ruleId}?updateMask=enabled`, { enabled: !enabled }, { signal }),
      `${rule.ruleId} ${enabled ? "disabled" : "enabled"}.`),
  }, enabled ? "Disable" : "Enable");
  // Deleting asks once more, in place: the button turns into a confirmation.
  const remove = h("button", {
    type: "button", disabled: !admin, title: admin ? null : ADMIN_NEEDED, "aria-label": `Delete rule ${rule.ruleId}`,
    onclick: (event) => {
      const button = event.target;
      if (button.dataset.confirm !== "yes") {
        button.dataset.confirm = "yes";
        button.textContent = "Confirm delete";
        button.setAttribute("aria-label", `Confirm: delete rule ${rule.ruleId}`);
        return;
      }
      act(button, () => send("DELETE", `/v1/rules/${rule.ruleId}`, undefined, { signal }), `${rule.ruleId} deleted.`);
    },
  }, "Delete");
  const sensors = rule.silence
    ? [`devices ${rule.silence.deviceIdPrefix ? `${rule.silence.deviceIdPrefix}*` : "(all)"}`,
      ...Object.entries(rule.silence.deviceLabels ?? {}).map(([k, v]) => ` ${k}=${v}`)]
    : rule.sensorIdPrefix ? `${rule.sensorIdPrefix}*` : "every sensor";
  const raises = rule.silence ? "when silent" : [`${rule.count || 1} in a row`, rule.duration && rule.duration !== "0s" ? `, for ${rule.duration}` : ""];
  return h("tr", { "data-rule-id": rule.ruleId, "data-state": enabled ? "enabled" : "disabled" },
    h("th", { scope: "row" }, h("a", { href: `/rules/${rule.ruleId}` }, condition(rule)), h("span", { class: "rule-id" }, ` ${rule.ruleId}`)),
    h("td", {}, sensors),
    h("td", {}, SEVERITIES[rule.severity || "SEVERITY_UNSPECIFIED"]),
    h("td", {}, raises),
    // The configuration's rules (clear count 0) raise events, no alarms.
    h("td", {}, rule.silence ? "at the next reading" : rule.clearCount ? `${rule.clearCount} in a row` : "raises no alarm"),
    h("td", {}, enabled ? "Enabled" : "Disabled"),
    h("td", {}, time(rule.updateTime, when(rule.updateTime))),
    h("td", { class: "actions" }, h("a", { href: `/rules/${rule.ruleId}`, "aria-label": `Edit rule ${rule.ruleId}` }, "Edit"), toggle, remove));
}

// --- the form -----------------------------------------------------------------------------------------

export async function rulePage(main, { signal, params: [ruleId], navigate }) {
  const creating = ruleId === "new";
  main.append(heading(creating ? "New rule" : `Rule ${ruleId}`));
  const rule = creating ? { enabled: true, count: 1, clearCount: 1, severity: "SEVERITY_MAJOR" } : await get(`/v1/rules/${ruleId}`, {}, { signal });
  const admin = allows("admin");
  const said = h("p", { class: "action-state", role: "status" });
  const fields = ruleFields(rule);
  const form = h("form", {
    class: "rule", novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      fields.clearErrors();
      const wrong = fields.local();
      if (wrong.size) {
        said.textContent = `Not saved: ${fields.showErrors(wrong)} field(s) to correct.`;
        form.querySelector("[aria-invalid=true]")?.focus();
        return;
      }
      const body = fields.value();
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const saved = creating
          ? await send("POST", "/v1/rules", body, { signal })
          : await send("PATCH", `/v1/rules/${ruleId}?updateMask=${fields.mask().join(",")}`, { ...body, version: rule.version }, { signal });
        navigate(`/rules?done=${encodeURIComponent(`${saved.ruleId} ${creating ? "created" : "saved"}.`)}`);
      } catch (error) {
        if (signal.aborted) return;
        submit.disabled = false;
        const shown = error instanceof ApiError ? fields.showErrors(error.violations) : 0;
        said.textContent = shown ? `Not saved: ${shown} field(s) to correct.` : `Not saved: ${error instanceof ApiError ? error.message : error}`;
        form.querySelector("[aria-invalid=true]")?.focus();
      }
    },
  }, fields.element, h("div", { class: "toolbar" },
    h("button", { type: "submit", disabled: !admin, title: admin ? null : ADMIN_NEEDED }, creating ? "Create rule" : "Save"),
    h("a", { href: "/rules" }, "Cancel")));
  main.append(form, said);
  if (!admin) main.append(h("p", { class: "note" }, `Saving ${ADMIN_NEEDED}.`));
  main.append(previewPanel(fields, { signal }));
}

/** The form's fields for `rule`: `value()` is the rule the API takes, `mask()` the fields an update
 * sets, `showErrors(violations)` puts each of the server's objections next to its field. */
function ruleFields(rule) {
  const inputs = new Map(); // API field path (as violations name it) -> input
  const errors = new Map();
  const field = (path, label, control, hint) => {
    const id = `rule-${path.replace(/\W/g, "-")}`;
    control.id = id;
    const error = h("span", { class: "field-error", id: `${id}-error` });
    control.setAttribute("aria-describedby", `${id}-error`);
    inputs.set(path, control);
    errors.set(path, error);
    return h("div", { class: "field", "data-field": path }, h("label", { for: id }, label), control,
      hint ? h("span", { class: "hint" }, hint) : null, error);
  };
  const select = (options, value) => h("select", {}, options.map(([name, text]) => h("option", { value: name, selected: name === value }, text)));
  const text = (value, attrs = {}) => h("input", { type: "text", value: value ?? "", autocomplete: "off", spellcheck: "false", ...attrs });
  const seconds = (duration) => (duration ? String(Number.parseFloat(duration)) : "");
  const silence = Boolean(rule.silence);
  const kind = select([["threshold", "A threshold on readings"], ["silence", "A device going silent"]], silence ? "silence" : "threshold");
  kind.disabled = Boolean(rule.ruleId); // a rule keeps its kind
  const threshold = h("fieldset", { class: "threshold" }, h("legend", {}, "Threshold"),
    field("rule.metric_type", "Metric type", text(rule.metricType, { placeholder: "temperature" })),
    field("rule.sensor_id_prefix", "Sensor id starts with", text(rule.sensorIdPrefix, { placeholder: "every sensor" })),
    field("rule.comparison", "Comparison", select(Object.entries(COMPARISONS).map(([n, s]) => [n, `value ${s} threshold`]), rule.comparison ?? "COMPARISON_GREATER_OR_EQUAL")),
    field("rule.threshold", "Threshold", text(rule.threshold === undefined ? "" : String(rule.threshold), { inputmode: "decimal" })),
    field("rule.count", "Readings in a row that raise it", text(String(rule.count || 1), { inputmode: "numeric" }), "1 to 1,000"),
    field("rule.duration", "For at least (seconds)", text(seconds(rule.duration), { inputmode: "decimal" }), "optional, up to 7 days"),
    field("rule.clear_count", "Readings in a row that clear it", text(String(rule.clearCount || 1), { inputmode: "numeric" }), "1 to 1,000"));
  const quiet = h("fieldset", { class: "silence" }, h("legend", {}, "Silence"),
    field("rule.silence.after", "Silent for (seconds)", text(seconds(rule.silence?.after), { inputmode: "numeric" }), "10 s to 7 days"),
    field("rule.silence.device_id_prefix", "Device id starts with", text(rule.silence?.deviceIdPrefix, { placeholder: "every device" })),
    field("rule.silence.device_labels", "Device labels", h("textarea", { rows: 2, placeholder: "site=plant-7" },
      Object.entries(rule.silence?.deviceLabels ?? {}).map(([k, v]) => `${k}=${v}`).join("\n")), "one key=value a line"));
  const common = h("fieldset", {}, h("legend", {}, "Alarm"),
    field("rule.severity", "Severity", select(Object.entries(SEVERITIES), rule.severity || "SEVERITY_UNSPECIFIED")),
    field("rule.enabled", "Enabled", h("input", { type: "checkbox", checked: rule.enabled !== false })));
  const showKind = () => {
    threshold.hidden = kind.value !== "threshold";
    quiet.hidden = kind.value !== "silence";
  };
  kind.addEventListener("change", showKind);
  showKind();
  const element = h("div", { class: "fields" }, h("div", { class: "field" }, h("label", { for: "rule-kind" }, "Kind"), Object.assign(kind, { id: "rule-kind" })),
    threshold, quiet, common);
  const read = (path) => inputs.get(path).value.trim();
  const numeric = (path) => (read(path) === "" ? undefined : Number(read(path)));
  const NUMBERS = ["rule.threshold", "rule.count", "rule.duration", "rule.clear_count", "rule.silence.after"];
  /** What the browser can tell before asking: a number field that holds no number. */
  const local = () => new Map(NUMBERS.filter((path) => read(path) !== "" && !Number.isFinite(Number(read(path))))
    .filter((path) => !inputs.get(path).closest("fieldset").hidden)
    .map((path) => [path, "must be a number"]));
  const value = () => {
    const common = { severity: read("rule.severity"), enabled: inputs.get("rule.enabled").checked };
    if (kind.value === "silence") {
      const labels = Object.fromEntries(read("rule.silence.device_labels").split("\n").filter((l) => l.trim())
        .map((line) => { const at = line.indexOf("="); return at < 0 ? [line.trim(), ""] : [line.slice(0, at).trim(), line.slice(at + 1).trim()]; }));
      return { ...common, silence: { after: read("rule.silence.after") ? `${read("rule.silence.after")}s` : undefined,
        deviceIdPrefix: read("rule.silence.device_id_prefix"), deviceLabels: labels } };
    }
    return {
      ...common, metricType: read("rule.metric_type"), sensorIdPrefix: read("rule.sensor_id_prefix"),
      comparison: read("rule.comparison"), threshold: numeric("rule.threshold"), count: numeric("rule.count"),
      duration: read("rule.duration") ? `${read("rule.duration")}s` : undefined, clearCount: numeric("rule.clear_count"),
    };
  };
  const mask = () => (kind.value === "silence"
    ? ["silence", "severity", "enabled"]
    : ["metric_type", "sensor_id_prefix", "comparison", "threshold", "count", "duration", "clear_count", "severity", "enabled"]);
  const clearErrors = () => {
    for (const [path, error] of errors) {
      error.textContent = "";
      inputs.get(path).removeAttribute("aria-invalid");
    }
  };
  /** Puts each violation next to its field (a field of a map, e.g. a label, goes to the map's);
   * returns how many fields got one. */
  const showErrors = (violations) => {
    let shown = 0;
    for (const [path, description] of violations) {
      const known = [...inputs.keys()].filter((p) => path === p || path.startsWith(`${p}[`) || path.startsWith(`${p}.`))
        .sort((a, b) => b.length - a.length)[0] ?? (inputs.has(`rule.${path}`) ? `rule.${path}` : null);
      if (!known) continue;
      const error = errors.get(known);
      error.textContent = [error.textContent, description].filter(Boolean).join("; ");
      inputs.get(known).setAttribute("aria-invalid", "true");
      shown += 1;
    }
    return shown;
  };
  return { element, value, mask, clearErrors, showErrors, local, kind: () => kind.value };
}

/** Where the form's threshold rule would have raised and cleared its alarm over a sensor's last day. */
function previewPanel(fields, { signal }) {
  const sensor = h("input", { id: "preview-sensor", type: "search", autocomplete: "off", spellcheck: "false", placeholder: "a sensor id" });
  const result = h("div", { class: "preview-result", "aria-live": "polite" });
  const figure = h("figure", { class: "chart" });
  let chart = null;
  signal.addEventListener("abort", () => chart?.destroy());
  const run = async (event) => {
    event.preventDefault();
    const rule = fields.value();
    if (fields.kind() !== "threshold") {
      result.replaceChildren(h("p", {}, "A silence rule has no preview: it watches devices, not values."));
      return;
    }
    const to = Date.now();
    const readings = [];
    let pageToken = "";
    do {
      const answer = await get(`/v1/sensors/${encodeURIComponent(sensor.value.trim())}/readings`, {
        metricType: rule.metricType, startTime: new Date(to - DAY_MS).toISOString(), endTime: new Date(to).toISOString(),
        pageSize: 10_000, pageToken,
      }, { signal });
      readings.push(...(answer.metrics ?? []));
      pageToken = answer.nextPageToken;
    } while (pageToken && readings.length < PREVIEW_READINGS);
    const changes = preview(rule, readings);
    chart?.destroy();
    figure.replaceChildren();
    if (!readings.length) {
      result.replaceChildren(empty(`No ${rule.metricType || ""} readings of “${sensor.value.trim()}” in the last day.`));
      return;
    }
    const raised = changes.filter((c) => c.change === "raised");
    result.replaceChildren(
      h("p", { class: "preview-summary" }, `Over ${number(readings.length)} readings${pageToken ? " (the first of the day)" : ""} of the last day, `
        + `the rule would have raised ${raised.length} alarm(s) and cleared ${changes.length - raised.length}.`),
      changes.length ? h("ol", { class: "preview-changes" }, changes.map((c) => h("li", { "data-change": c.change },
        `${c.change === "raised" ? "Raised" : "Cleared"} `, time(c.time, when(c.time)), ` at ${number(c.value)}`))) : null);
    const buckets = readings.map((m) => ({ startTime: m.readingTime, count: 1, min: m.value, mean: m.value, max: m.value }));
    const times = readings.map((m) => Date.parse(m.readingTime));
    figure.append(h("div", { class: "plot" }));
    chart = await drawChart(figure.firstChild, {
      buckets, unit: readings[0].unit ?? "", eventTimes: raised.map((c) => Date.parse(c.time)),
      range: { from: Math.min(...times), to: Math.max(...times) + 1 }, onSelect: () => {}, signal,
    }).catch(() => null);
  };
  return h("section", { class: "preview", "aria-labelledby": "preview-heading" },
    h("h2", { id: "preview-heading" }, "Preview"),
    h("p", { class: "hint" }, "Where the rule as written above would have raised and cleared its alarm over a sensor's stored readings of the last day (computed here, from the readings the API returns)."),
    h("form", { role: "search", onsubmit: (event) => run(event).catch((error) => signal.aborted || result.replaceChildren(problem(error, () => run(event)))) },
      h("label", { for: "preview-sensor" }, "Sensor"), sensor, h("button", { type: "submit" }, "Preview")),
    result, figure);
}
