// The registered devices (DevicesService): found by the start of their id, a page at a time, each
// with its state, when it was last heard, whether it is connected over MQTT, its sensors, labels and
// credentials (never a secret); disabled and enabled from here
// (an admin token on the TLS port). A disabled device's tokens, certificates and MQTT account are
// refused within a second.
import { ADMIN_NEEDED, ApiError, allows, get, post } from "./api.js";
import { empty, h, heading, time } from "./dom.js";
import { when } from "./format.js";
import { pager, prefixSearch } from "./listing.js";
import { silentDevices } from "./silent.js";

const PAGE_SIZE = 50;
const KINDS = {
  CREDENTIAL_KIND_TOKEN: "token",
  CREDENTIAL_KIND_CERTIFICATE: "certificate",
  CREDENTIAL_KIND_MQTT_PASSWORD: "MQTT password",
};
const ENABLED = "DEVICE_STATE_ENABLED";

export async function devicesPage(main, { signal, query, navigate }) {
  const prefix = query.get("prefix") ?? "";
  const search = prefixSearch({ label: "Device id starts with", path: "/devices", prefix, navigate });
  // What an action did, or why it failed, read out by screen readers.
  const said = h("p", { class: "action-state", role: "status" });
  const results = h("div", { class: "results" });
  main.append(heading("Devices"), search, said, results);

  const tokens = [""];
  let index = 0;
  // Silent devices are marked; the page is whole without (AlarmsService answers on the processor).
  const silent = await silentDevices({ signal }).catch(() => new Map());
  const load = async (to, focus) => {
    const answer = await get("/v1/devices", { deviceIdPrefix: prefix, pageSize: PAGE_SIZE, pageToken: tokens[to] }, { signal });
    index = to;
    tokens[index + 1] = answer.nextPageToken;
    const rows = answer.devices ?? [];
    results.replaceChildren(...table(rows, prefix, index, said, signal, silent),
      pager({ label: "Pages of devices", index, answer, load, results, signal }));
    if (focus) results.querySelector(`[data-pager="${focus}"]:not([disabled])`)?.focus();
  };
  await load(0);
}

function table(devices, prefix, index, said, signal, silent) {
  if (!devices.length && index === 0) {
    return [empty(prefix ? `No device id starts with “${prefix}”.` : "No devices registered yet.",
      "Register devices with POST /v1/devices, or a fleet from a CSV file with make devices.")];
  }
  const first = index * PAGE_SIZE + 1;
  return [h("table", { class: "devices", tabindex: "-1" },
    h("caption", {}, `Devices ${first}–${first + devices.length - 1}`, prefix ? ` starting with “${prefix}”` : ""),
    h("thead", {}, h("tr", {}, ...["Device", "Sensors", "Labels", "State", "Last reading", "MQTT", "Credentials", ""].map((name) =>
      h("th", { scope: "col" }, name)))),
    h("tbody", {}, devices.map((device) => row(device, said, signal, silent.get(device.deviceId)))))];
}

function row(device, said, signal, silentSince) {
  const state = h("td", { class: "state" });
  const silence = silentSince ? h("span", { class: "silent" }, " · silent since ", time(silentSince, when(silentSince))) : null;
  // Disabling and enabling take the admin scope: without it the button says why it cannot.
  const admin = allows("admin");
  const action = h("button", { type: "button", disabled: !admin, title: admin ? null : ADMIN_NEEDED });
  const show = (current) => {
    const enabled = current.state === ENABLED;
    state.replaceChildren(enabled ? "Enabled" : "Disabled", silence ?? "");
    state.dataset.state = enabled ? "enabled" : "disabled";
    action.textContent = enabled ? "Disable" : "Enable";
    action.setAttribute("aria-label", `${enabled ? "Disable" : "Enable"} ${current.deviceId}`);
  };
  let current = device;
  action.addEventListener("click", async () => {
    const verb = current.state === ENABLED ? "disable" : "enable";
    action.disabled = true;
    try {
      current = await post(`/v1/devices/${encodeURIComponent(current.deviceId)}:${verb}`, {}, { signal });
      show(current);
      said.textContent = `${current.deviceId} ${verb}d.`;
    } catch (error) {
      if (signal.aborted) return;
      said.textContent = `${current.deviceId} not ${verb}d: ${error instanceof ApiError ? error.message : error}`;
    } finally {
      action.disabled = false;
    }
  });
  show(device);
  const labels = Object.entries(device.labels ?? {});
  const credentials = device.credentials ?? [];
  return h("tr", {},
    h("th", { scope: "row" }, device.deviceId, device.displayName ? h("span", { class: "display-name" }, ` ${device.displayName}`) : null),
    h("td", {}, device.sensorIdPrefix ? `${device.sensorIdPrefix}…` : device.deviceId),
    h("td", {}, labels.length ? h("ul", { class: "labels" }, labels.map(([k, v]) => h("li", {}, `${k}=${v}`))) : "—"),
    state,
    h("td", { class: "last-seen" }, device.lastSeenTime ? time(device.lastSeenTime, when(device.lastSeenTime)) : "never"),
    h("td", { class: "mqtt" }, device.mqttConnected
      ? ["connected since ", time(device.mqttConnectTime, when(device.mqttConnectTime))] : "not connected"),
    h("td", {}, credentials.length
      ? h("ul", { class: "credentials" }, credentials.map((c) => h("li", {},
        `${KINDS[c.kind] ?? c.kind} ${c.credentialId}`,
        c.expireTime && !c.expireTime.startsWith("9999") ? [", until ", time(c.expireTime, c.expireTime.slice(0, 10))] : null)))
      : "none"),
    h("td", {}, action));
}
