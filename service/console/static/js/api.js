// The JSON API, called with the pasted key. The key lives in sessionStorage (gone when the tab
// closes) and travels only in the Authorization header: never in a URL, where it would end up in
// server logs, the browser history and Referer headers.

const KEY_ITEM = "unlearn-console.api-key";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_ITEM),
  set: (key) => sessionStorage.setItem(KEY_ITEM, key.trim()),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

/** An answer that was not 2xx, with the API's problem+json body (RFC 9457) when it sent one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Same-origin API paths only: the console must never send the key anywhere else. */
export function apiUrl(path, params = {}) {
  if (!path.startsWith("/v1/")) throw new Error(`not an API path: ${path}`);
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export async function problemOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): the status alone says what happened
  }
  return new ApiError(response.status, body);
}

export async function getJson(path, params = {}, signal = undefined) {
  const response = await fetch(apiUrl(path, params), {
    headers: { Accept: "application/json", ...authHeaders() },
    cache: "no-store",
    credentials: "omit",
    signal,
  });
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

/** Every item of a paginated list, following next_cursor (bounded: a console is not an export). */
export async function getAll(path, params = {}, signal = undefined, maxPages = 10) {
  const items = [];
  let cursor;
  for (let page = 0; page < maxPages; page++) {
    const answer = await getJson(path, { ...params, limit: 200, cursor }, signal);
    items.push(...answer.items);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  return items;
}
