// What the pages that list things a page at a time share: a search by the start of an id, and the
// Previous/Next buttons that walk the API's page tokens.
import { h } from "./dom.js";
import { problem } from "./problem.js";

/** A search form for ids starting with something: it navigates to `path?prefix=...`. */
export function prefixSearch({ label, path, prefix, navigate }) {
  const input = h("input", {
    id: "prefix", name: "prefix", type: "search", value: prefix, autocomplete: "off", spellcheck: "false",
    placeholder: "e.g. plant-7-",
  });
  return h("form", {
    role: "search", action: path, method: "get",
    onsubmit: (event) => {
      event.preventDefault();
      const wanted = input.value.trim();
      navigate(wanted ? `${path}?prefix=${encodeURIComponent(wanted)}` : path);
    },
  }, h("label", { for: "prefix" }, label), input, h("button", { type: "submit" }, "Search"));
}

/** Previous and Next for page `index` of an answer; each button keeps the focus where it was after
 * its page loads, unless it is disabled then. */
export function pager({ label, index, answer, load, results, signal }) {
  const button = (text, to, disabled) => h("button", {
    type: "button", "data-pager": text, disabled,
    onclick: () => load(to, text).catch((error) => signal.aborted || results.append(problem(error, () => load(to, text)))),
  }, text);
  return h("nav", { class: "pager", "aria-label": label },
    button("Previous", index - 1, index === 0),
    button("Next", index + 1, !answer.nextPageToken));
}
