// Silent devices: the active alarms of silence rules (an alarm without a metric type, its sensorId
// the device's id, raised when the device became silent), read from AlarmsService.
import { get } from "./api.js";

const PAGES = 5; // active alarms of every kind are listed; the first 5,000 are looked at

/** The silent devices: device id -> when it became silent (RFC 3339). */
export async function silentDevices({ signal }) {
  const silent = new Map();
  let pageToken = "";
  for (let page = 0; page < PAGES; page++) {
    const answer = await get("/v1/alarms", { state: "ALARM_STATE_ACTIVE", pageSize: 1000, pageToken }, { signal });
    for (const alarm of answer.alarms ?? []) {
      if (!alarm.metricType && !silent.has(alarm.sensorId)) silent.set(alarm.sensorId, alarm.raiseTime);
    }
    pageToken = answer.nextPageToken;
    if (!pageToken) break;
  }
  return silent;
}
