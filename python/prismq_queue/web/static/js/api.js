// Calls to the REST API, and the access token they carry.
//
// The token arrives in the URL fragment (#token=...): browsers never send a fragment to the
// server, so it appears in no access log. It is moved to sessionStorage at once (this tab only,
// gone when the tab closes) and removed from the address bar, so it is not left in the history
// nor shared with a copied link or a screenshot.

const TOKEN_KEY = "prismq.dashboard.token";

export const token = {
  get() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** Move a `#token=...` fragment into sessionStorage and strip it from the address bar. */
export function takeTokenFromUrl() {
  // Split by hand: URLSearchParams would turn a "+" of the token into a space.
  const parts = location.hash.replace(/^#/, "").split("&");
  const found = parts.find((p) => p.startsWith("token="));
  if (found === undefined) return;
  let value = found.slice("token=".length);
  try {
    value = decodeURIComponent(value);
  } catch (e) {
    // not percent-encoded: take it as it is
  }
  if (value.trim()) token.set(value.trim());
  const rest = parts.filter((p) => p !== found && p !== "").join("&");
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
}

/** Whether the address bar carries a token. */
export function urlHasToken() {
  return location.hash.replace(/^#/, "").split("&").some((p) => p.startsWith("token="));
}

// The API prefix comes from the page (the server fills it in); URLs are resolved relative to
// the page, so the app also works when a proxy mounts it under a sub-path.
const prefix = (document.querySelector('meta[name="prismq-api"]')?.content || "/api").replace(/^\/+|\/+$/g, "");
const base = new URL(prefix ? prefix + "/" : "./", document.baseURI);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/** JSON from `path` (relative to the API prefix); throws ApiError with the server's detail. */
export async function api(path, { method = "GET" } = {}) {
  const headers = { Accept: "application/json" };
  const secret = token.get();
  if (secret) headers.Authorization = "Bearer " + secret;
  let response;
  try {
    response = await fetch(new URL(path, base), { method, headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "the server did not answer");
  }
  if (!response.ok) {
    let detail = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) detail = body.detail.map((e) => e.msg).join("; ");
    } catch (e) {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

/** The ws:// or wss:// URL of an API path. */
export function wsUrl(path) {
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}
