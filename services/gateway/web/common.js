/* Shared by every part of the page: the API, messages, values as the page shows them, image cards. */
"use strict";

const $ = (id) => document.getElementById(id);
const COLUMN_TYPES = ["string", "int", "float", "bool", "timestamp", "string_list"];
const SAMPLE_VALUES = { string: "text", int: 1, float: 1.5, bool: true, timestamp: "2024-01-31T12:00:00Z", string_list: ["a", "b"] };
const SQL_SAMPLES = { string: "'text'", int: "1", float: "39.5", bool: "true", timestamp: "TIMESTAMP '2024-01-31 12:00:00'",
                      string_list: "ARRAY['a', 'b']" };
const SQL_TYPES = { string: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", timestamp: "TIMESTAMP", string_list: "VARCHAR[]" };
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const BUILTIN_TYPES = { created_at: "timestamp" };
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/;
// What an add or import does with an image within the near-duplicate distance of one in the album.
const ON_DUPLICATE = [["keep", "keep both"], ["skip", "skip the new image"], ["replace", "replace the old image"]];
for (const select of document.querySelectorAll("select.on-duplicate")) {
  for (const [value, text] of ON_DUPLICATE) {
    const option = el("option", null, text);
    option.value = value;
    select.appendChild(option);
  }
}
let queryFile = null;
/** An image of the album as the query (a result's "Search with this"): {id, name, url, album}; null: none. */
let queryImage = null;
let sqlFile = null;
let albums = new Map();
let sampleImageName = "";

function show(el, text, kind) { el.textContent = text || ""; el.className = "msg " + (kind || ""); }
/** "1 image", "3 images". */
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

async function api(path, options) {
  let response;
  try { response = await fetch(path, options); }
  catch (e) { throw new Error("The gateway cannot be reached: " + e.message); }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok && !(body && body.results)) throw apiError(response.status, body);
  return { status: response.status, body };
}

/** The Error for an API answer of `status`: the server's message, with its reason and request id. */
function apiError(status, body) {
  const err = body && body.error;
  const error = new Error(err ? `${err.message} (${err.reason}, HTTP ${status}, request ${err.request_id})`
                              : `HTTP ${status}`);
  error.status = status;
  error.detail = err ? err.message : "";
  error.meta = err ? `${err.reason} · HTTP ${status} · request ${err.request_id}` : "";
  return error;
}

/** The server's message in a box, with its reason, status and request id below. */
function showError(box, error) {
  show(box, error.detail || error.message, "error box");
  if (error.meta) box.appendChild(el("div", "meta", error.meta));
}

// --- values: one formatting for cards and tables -------------------------------------------------

function isTimestamp(value, type) {
  return typeof value === "string" && (type === "timestamp" || ISO_TIME.test(value)) && !isNaN(Date.parse(value));
}

/** "1 May 2024" for a date (midnight UTC), else "1 Jun 2023 09:30" in the browser's time zone. */
function readableTime(iso) {
  const d = new Date(iso);
  if (d.getUTCHours() + d.getUTCMinutes() + d.getUTCSeconds() + d.getUTCMilliseconds() === 0)
    return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}`;
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function formatNumber(value, column) {
  if (column === "distance") return value.toFixed(4);
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(4)));
}

/** A span showing one value: null as a muted dash, timestamps readable, lists joined, distances to 4 decimals. */
function valueNode(value, type, column) {
  const span = el("span", "v");
  if (value === null || value === undefined) { span.classList.add("null"); span.textContent = "—"; span.title = "null"; return span; }
  if (typeof value === "number") { span.classList.add("num"); span.textContent = formatNumber(value, column); }
  else if (typeof value === "boolean") span.textContent = value ? "true" : "false";
  else if (Array.isArray(value)) {
    span.textContent = value.length ? value.map((v) => typeof v === "string" ? v : JSON.stringify(v)).join(", ") : "empty";
    if (!value.length) span.classList.add("null");
  } else if (typeof value === "object") {
    span.textContent = Object.keys(value).length ? JSON.stringify(value) : "—";
    if (!Object.keys(value).length) span.classList.add("null");
  } else if (isTimestamp(value, type)) { span.textContent = readableTime(value); }
  else span.textContent = String(value);
  span.title = typeof value === "object" ? JSON.stringify(value) : String(value);
  return span;
}

function kvNode(label, value, type) {
  const row = el("div", "kv");
  row.dataset.column = label;
  const key = el("span", "k", label);
  key.title = label;
  row.append(key, valueNode(value, type, label));
  return row;
}

/** Lines of [label, value, type]; those of an image's attributes (`attributePairs`) are marked, to be redrawn when
 * the image is changed. */
function kvsNode(pairs) {
  const kvs = el("div", "kvs" + (pairs.attributes ? " attrs" : ""));
  for (const [label, value, type] of pairs) kvs.appendChild(kvNode(label, value, type));
  return kvs;
}

/** A thumbnail card: the image's name, then each group of [label, value, type] as label/value lines. */
function imageCard(image, groups) {
  const card = el("div", "card");
  card.dataset.imageId = image.id;
  card.dataset.album = albumOfImage(image);
  const link = el("a");
  link.href = image.url; link.target = "_blank"; link.rel = "noopener";
  link.title = "Details: attributes, faces; edit or delete";
  opensDetails(link, image);
  const img = el("img");
  img.src = image.thumbnail_url; img.alt = image.name; img.loading = "lazy";
  link.appendChild(img);
  const meta = el("div", "meta");
  const name = el("div", "name", image.name);
  name.title = `${image.name}: details`;
  opensDetails(name, image);
  meta.appendChild(name);
  for (const pairs of groups.filter((g) => g.length)) {
    meta.appendChild(kvsNode(pairs));
  }
  card.append(link, meta);
  return card;
}

