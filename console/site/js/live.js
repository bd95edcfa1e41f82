// Live events: the events of the last hour, then each new one as it is raised (Server-Sent Events
// from /v1/events:watch), newest first, without reloading.
import { get, rfc3339, watch } from "./api.js";
import { h, heading } from "./dom.js";
import { eventRow, eventTable } from "./events.js";
import { problem } from "./problem.js";

const KEPT = 500;
const HOUR_MS = 3_600_000;
// A late reading may raise an event with an older time: gaps are filled from a little earlier.
const OVERLAP_MS = 60_000;

export async function livePage(main, { signal }) {
  const state = h("div", { class: "stream-state", role: "status" }, "Connecting…");
  const rows = h("tbody");
  const table = eventTable("Events, newest first", rows);
  main.append(heading("Live events"), state, table);
  const seen = new Set();
  // The newest reading time received: after a broken stream, events since then are fetched.
  let since = Date.now() - HOUR_MS;

  const add = (event, fresh) => {
    if (seen.has(event.eventId)) return;
    seen.add(event.eventId);
    since = Math.max(since, Date.parse(event.readingTime));
    const row = eventRow(event);
    if (fresh) row.classList.add("fresh");
    // Newest first by reading time: a late event goes below newer ones.
    const later = [...rows.rows].find((r) => Date.parse(r.querySelector("time").dateTime) <= Date.parse(event.readingTime));
    rows.insertBefore(row, later ?? null);
    while (rows.rows.length > KEPT) rows.lastElementChild.remove();
  };
  const fill = async () => {
    const answer = await get("/v1/events", {
      startTime: rfc3339(since - OVERLAP_MS), endTime: rfc3339(Date.now() + HOUR_MS), pageSize: 1000,
    }, { signal });
    for (const event of answer.events.reverse()) add(event, false);
  };

  // The last hour first; a refusal (a token needed) shows here, where its status is known, which an
  // EventSource does not tell.
  await fill();
  watch("/v1/events:watch", {}, {
    signal,
    onMessage: (message) => add(message.event, true),
    onState: (name, error) => {
      if (name === "open") {
        state.textContent = "Live: new events appear at the top as they are raised.";
        state.dataset.state = "open";
        fill().catch((failure) => signal.aborted || main.append(problem(failure, () => fill())));
      } else if (name === "retrying") {
        state.textContent = "The stream broke; reconnecting…";
        state.dataset.state = "retrying";
      } else {
        state.textContent = "";
        state.dataset.state = "closed";
        state.append(problem(error, () => location.reload()));
      }
    },
  });
}
