// The JSON API from the page: the key (if the server wants one) lives in sessionStorage for this tab only and goes
// in the Authorization header; it is never put in a URL or in localStorage. Server-Sent Events are read with
// fetch() (EventSource cannot send headers), so live streams carry the key the same way.

const KEY = "sdq-api-key";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.fields = error.fields || [];
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** Called with no argument when the server answers 401: the app asks for a key. */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** fetch() a JSON route; throws ApiError with the API's code, message and field errors. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (response.status === 401) listeners.forEach((l) => l());
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Whether `path` answers 200 (for optional routes such as the model catalog). */
export async function probe(path) {
  try {
    return await api(path);
  } catch {
    return null;
  }
}

/**
 * Follow a Server-Sent Events route: `onEvent(name, data)` per event (data JSON-parsed). Reconnects after the
 * server's `retry` when the stream ends or drops, until `signal` aborts. Returns nothing; errors go to onError.
 */
export async function follow(path, onEvent, { signal, onError, reconnect = true } = {}) {
  let retryMs = 1000;
  while (!signal || !signal.aborted) {
    try {
      const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
      if (response.status === 401) listeners.forEach((l) => l());
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          const event = parse(block);
          if (event.retry) retryMs = event.retry;
          if (event.data !== undefined) {
            let data = event.data;
            try { data = JSON.parse(event.data); } catch { /* a plain-text event */ }
            onEvent(event.event || "message", data);
          }
        }
      }
    } catch (error) {
      if (signal && signal.aborted) return;
      if (onError) onError(error);
      if (error instanceof ApiError && error.status !== 503) return; // a 4xx will not go away by retrying
    }
    if (typeof reconnect === "function" ? !reconnect() : !reconnect) return;
    await sleep(retryMs, signal);
  }
}

function parse(block) {
  const event = {};
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") data.push(value);
    else if (name === "event") event.event = value;
    else if (name === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
  }
  if (data.length) event.data = data.join("\n");
  return event;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Run `task` every `ms` (first after `ms`) until `signal` aborts: a modest refresh, never overlapping. */
export async function every(ms, task, signal) {
  for (;;) {
    await sleep(ms, signal);
    if (signal.aborted) return;
    try { await task(); } catch (error) { if (!signal.aborted) console.warn(error); }
  }
}

/**
 * Upload one image file as `POST /v1/uploads` hands out: the API grants an upload id and a presigned link, and the
 * bytes go straight to storage (a PUT, or the POST form S3 takes), without the API key. Returns the grant; jobs
 * name the image as `grant.image` (`{"upload": id}`).
 */
export async function uploadImage(file, { signal } = {}) {
  const grant = await api("/v1/uploads", { method: "POST", body: { content_type: file.type }, signal });
  let init;
  if (grant.method === "POST") {
    const form = new FormData();
    for (const [name, value] of Object.entries(grant.fields || {})) form.append(name, value);
    form.append("file", file);
    init = { method: "POST", body: form, signal };
  } else {
    init = { method: "PUT", headers: grant.headers || {}, body: file, signal };
  }
  const response = await fetch(grant.url, { ...init, credentials: "omit" });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return grant;
}
