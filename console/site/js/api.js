// The public HTTP/JSON API (docs/api.md, "HTTP/JSON"), on the origin that served the page: no other backend.

// On the TLS port every API call needs a token; one pasted into the console is kept for this tab
// only (sessionStorage), never in the page's URL or in localStorage.
const TOKEN_KEY = "metrics-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) ?? "",
  set: (value) => (value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY)),
};

/** Why an action is not offered to a token without the admin scope. */
export const ADMIN_NEEDED = "needs a token with the admin scope";

/** Whether the calls of `scope` ("read", "admin", ...) are the caller's: any without a token (the
 * plaintext door); else those the token's scope claim names. The server decides: this only spares a
 * user buttons that would be refused. */
export function allows(scope) {
  const bearer = token.get();
  if (!bearer) return true;
  try {
    const claims = JSON.parse(atob(bearer.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return String(claims.scope ?? "").split(" ").includes(scope);
  } catch {
    return true; // not a JWT we can read: let the server answer
  }
}

/** An answer other than 2xx, or no answer (status 0). */
export class ApiError extends Error {
  constructor(status, message, details = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.details = details;
  }

  /** The fields a 400 names (google.rpc.BadRequest): field path → what is wrong with it. */
  get violations() {
    const found = new Map();
    for (const detail of this.details ?? []) {
      for (const v of detail.fieldViolations ?? []) found.set(v.field, [found.get(v.field), v.description].filter(Boolean).join("; "));
    }
    return found;
  }
}

function url(path, params) {
  const target = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

function headers() {
  const bearer = token.get();
  return bearer ? { accept: "application/json", authorization: `Bearer ${bearer}` } : { accept: "application/json" };
}

/** GET `path` with query `params` (empty ones left out): the JSON body, or an ApiError. */
export async function get(path, params = {}, { signal } = {}) {
  let response;
  try {
    response = await fetch(url(path, params), { headers: headers(), signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new ApiError(0, "no answer from the server");
  }
  // Envoy's and the services' errors are JSON {code, message}; Prometheus's {status, error}.
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body?.message ?? body?.error ?? response.statusText);
  return body;
}

/** `method` ("POST", "PATCH", "DELETE") with `body` (JSON; none when undefined) to `path`: the JSON
 * answer, or an ApiError (with the fields a 400 names). */
export async function send(method, path, body, { signal } = {}) {
  let response;
  const json = body === undefined ? {} : { headers: { ...headers(), "content-type": "application/json" }, body: JSON.stringify(body) };
  try {
    response = await fetch(url(path, {}), { method, headers: headers(), ...json, signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new ApiError(0, "no answer from the server");
  }
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, answer?.message ?? response.statusText, answer?.details);
  return answer;
}

/** POST `body` (JSON) to `path`: the JSON answer, or an ApiError. */
export const post = (path, body = {}, options = {}) => send("POST", path, body, options);

/** Times in the API's form (RFC 3339, UTC). */
export const rfc3339 = (ms) => new Date(ms).toISOString();

/**
 * Follows a Server-Sent Events route (`/v1/events:watch`): `onMessage` gets each parsed message,
 * `onState` "open", "retrying" or "closed" (with an ApiError). Stops when `signal` aborts.
 * EventSource reconnects by itself but cannot send a token: with one, the stream is read by fetch.
 */
export function watch(path, params, { signal, onMessage, onState }) {
  if (!token.get()) {
    const source = new EventSource(url(path, params));
    source.onopen = () => onState("open");
    source.onmessage = (message) => onMessage(JSON.parse(message.data));
    // A refused stream (an HTTP error) is closed for good; a broken one is retried by EventSource.
    source.onerror = () =>
      onState(source.readyState === EventSource.CLOSED ? "closed" : "retrying", new ApiError(0, "the stream was refused"));
    signal.addEventListener("abort", () => source.close());
    return;
  }
  streamWithToken(url(path, params), { signal, onMessage, onState });
}

async function streamWithToken(target, { signal, onMessage, onState }) {
  while (!signal.aborted) {
    try {
      const response = await fetch(target, { headers: { ...headers(), accept: "text/event-stream" }, signal });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        onState("closed", new ApiError(response.status, body?.message ?? response.statusText));
        return;
      }
      onState("open");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const messages = buffer.split("\n\n");
        buffer = messages.pop();
        for (const message of messages) {
          const data = message.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5)).join("\n");
          if (data) onMessage(JSON.parse(data));
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    onState("retrying");
    // As EventSource does: a few seconds before trying again.
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}
