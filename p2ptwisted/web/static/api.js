// Requests to the node's JSON API (docs/api.md), as this page may make
// them: with the session cookie the node set when it served the page, and,
// for anything that changes something, the CSRF token it put in the page.
// (The cookie is HttpOnly: the page never sees the API key or the session.)

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

/** An error the node explained: {"error": "..."} with its HTTP status. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, body) {
  const options = { method, headers: { Accept: "application/json" },
                    credentials: "same-origin" };
  if (method !== "GET") {
    options.headers["X-CSRF-Token"] = CSRF;
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;  // not JSON: the status line says what went wrong
  }
  if (!response.ok) {
    throw new ApiError(response.status,
                       (data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

export const getJSON = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
