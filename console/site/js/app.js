// The console's router: every page is index.html (Envoy serves it for each of these paths); the
// path picks what to draw. Links stay links: the router only takes over plain clicks on them.
import { alarmsPage } from "./alarms.js";
import { h } from "./dom.js";
import { groupsPage } from "./groups.js";
import { devicesPage } from "./devices.js";
import { fleetPage } from "./fleet.js";
import { healthPage } from "./health.js";
import { livePage } from "./live.js";
import { problem } from "./problem.js";
import { rulePage, rulesPage } from "./rules.js";
import { sensorPage } from "./sensor.js";
import { subscriptionsPage } from "./subscriptions.js";

const PAGES = [
  { path: /^\/$/, title: "Fleet", draw: fleetPage },
  { path: /^\/alarms$/, title: "Alarms", draw: alarmsPage },
  { path: /^\/rules$/, title: "Rules", draw: rulesPage },
  { path: /^\/rules\/([^/]+)$/, title: "Rule", draw: rulePage },
  { path: /^\/subscriptions$/, title: "Notifications", draw: subscriptionsPage },
  { path: /^\/devices$/, title: "Devices", draw: devicesPage },
  { path: /^\/events$/, title: "Live events", draw: livePage },
  { path: /^\/groups$/, title: "Groups", draw: groupsPage },
  { path: /^\/health$/, title: "Pipeline health", draw: healthPage },
  { path: /^\/sensors\/([^/]+)$/, title: "Sensor", draw: sensorPage },
];

// The page shown: aborting it stops its requests, streams and timers.
let shown = null;

/** Shows the page of `href`, a new entry in the history. */
function navigate(href) {
  history.pushState(null, "", href);
  show({ focus: true });
}

function page(pathname) {
  for (const candidate of PAGES) {
    const match = candidate.path.exec(pathname);
    if (!match) continue;
    try {
      return { ...candidate, params: match.slice(1).map(decodeURIComponent) };
    } catch {
      return null; // a malformed %-escape
    }
  }
  return null;
}

function show({ focus }) {
  shown?.abort();
  shown = new AbortController();
  const { signal } = shown;
  const main = document.getElementById("main");
  main.replaceChildren();
  const current = page(location.pathname);
  // A sensor's page belongs to the fleet's, a rule's to the rules'.
  const section = location.pathname.startsWith("/sensors/") ? "/"
    : location.pathname.startsWith("/rules/") ? "/rules" : location.pathname;
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.pathname === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!current) {
    main.append(h("h1", {}, "Not a page of the console"), h("p", {}, h("a", { href: "/" }, "The fleet")));
    return;
  }
  document.title = `${current.title} · Metrics`;
  const context = { signal, params: current.params, query: new URLSearchParams(location.search), navigate };
  // A page draws its heading before it waits for anything: after a navigation the focus goes there.
  let drawn;
  try {
    drawn = current.draw(main, context);
  } catch (error) {
    drawn = Promise.reject(error);
  }
  if (focus) main.querySelector("h1")?.focus();
  Promise.resolve(drawn).catch((error) => signal.aborted || main.append(problem(error, () => show({ focus: true }))));
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || link.target) return;
  if (link.origin !== location.origin || !page(link.pathname)) return;
  // A link within the page (the skip link) is the browser's.
  if (link.hash && link.pathname === location.pathname && link.search === location.search) return;
  event.preventDefault();
  navigate(link.href);
});
window.addEventListener("popstate", () => show({ focus: true }));
show({ focus: false });
