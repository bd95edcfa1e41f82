// Small DOM helpers. Text always goes in as text, never parsed as HTML: sensor ids, units and labels
// come from devices.

/** An element with attributes (`on...` ones are listeners) and children (nodes or strings). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** A <time> showing `text`, with the exact time (RFC 3339) for machines and as a tooltip. */
export function time(iso, text) {
  return h("time", { datetime: iso, title: iso }, text);
}

/** The page's main heading; it takes the focus after a navigation, so keyboard users start there. */
export function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

/** A message that stands in for content that is not there (not an error). */
export function empty(title, ...details) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), ...details.map((d) => h("p", {}, d)));
}
