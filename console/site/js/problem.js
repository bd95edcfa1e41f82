// How a page says that something failed, and on the TLS port asks for a token.
import { ApiError, token } from "./api.js";
import { h } from "./dom.js";

/** What went wrong, in words; `retry` runs after a token is given (401: none or a bad one; 403: one
 * whose scope does not allow it, which another token may). */
export function problem(error, retry = () => location.reload()) {
  const box = h("div", { class: "problem", role: "alert" });
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true });
    const form = h("form", {
      class: "token",
      onsubmit: (event) => {
        event.preventDefault();
        token.set(input.value.trim());
        retry();
      },
    }, h("label", { for: "token" }, "Token (make token), kept for this tab only"), input,
    h("button", { type: "submit" }, "Use token"));
    const why = error.status === 401 ? `This port needs a token: ${error.message}.`
      : `This token may not do this: ${error.message} (HTTP 403). Another token may.`;
    box.append(h("p", {}, why), form);
    return box;
  }
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : "";
  box.append(h("p", {}, `Could not load this: ${error.message}${status}.`));
  return box;
}
