/* An image's details: the photo with its faces, what is stored of it, its name and attributes edited, deleted. */
"use strict";

/** The image the dialog shows: {album, image (as the API answers it), faces (null: none asked)}. */
let details = null;

/** A link of a card or thumbnail: a plain click opens the image's details (a middle or modified click still
 * opens its bytes in a new tab). */
function opensDetails(link, image) {
  link.addEventListener("click", (e) => {
    if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    openDetails(image);
  });
}

/** The album an image belongs to, read from its URL (/v1/albums/{album}/images/{id}/...). */
function albumOfImage(image) {
  const match = /\/v1\/albums\/([^/]+)\/images\//.exec(image.url || "");
  return match ? decodeURIComponent(match[1]) : currentAlbum();
}

/** Whether the dialog still shows this image of this album (a late answer about another is dropped; the same
 * photo in two albums has one id). */
function stillShown(id, album) { return Boolean(details && details.image.id === id && details.album === album); }

async function openDetails(shown) {
  const album = albumOfImage(shown);
  details = { album, image: shown, faces: null, fields: [], others: {}, loaded: false };
  warnedUnsaved = false;
  $("imgTitle").textContent = shown.name;
  $("imgName").value = "";
  $("imgOthers").value = "";
  $("imgFull").src = shown.url;
  $("imgFull").alt = shown.name;
  $("imgOpen").href = shown.url;
  $("imgConfirm").hidden = true;
  show($("imgMsg"), "Loading…");
  $("imgFacts").replaceChildren();
  $("imgFields").replaceChildren();
  drawDetailFaces();
  setDetailsBusy(true);
  // An image of another album (an SQL result of another table) is shown and edited, not searched with here.
  const here = album === currentAlbum();
  $("imgSearch").hidden = !here;
  if (!$("imageDialog").open) $("imageDialog").showModal();
  try {
    const { body } = await api(imagePath(album, shown.id));
    if (!stillShown(shown.id, album)) return;  // another image opened meanwhile
    fillDetails(body);
    details.loaded = true;
    show($("imgMsg"), "");
    setDetailsBusy(false);
  } catch (e) { if (stillShown(shown.id, album)) showError($("imgMsg"), e); return; }
  if (here && (albums.get(album) || {}).faces) loadDetailFaces(album, shown.id);
}

function imagePath(album, id) { return `/v1/albums/${encodeURIComponent(album)}/images/${encodeURIComponent(id)}`; }

function setDetailsBusy(busy) {
  for (const id of ["imgSave", "imgDelete", "imgSearch", "imgDeleteYes"]) $(id).disabled = busy;
}

/** The dialog filled from the image as stored: facts, its name, a field per declared column, the rest as JSON. */
function fillDetails(image) {
  details.image = image;
  $("imgTitle").textContent = image.name;
  const facts = [["id", image.id], ["stored", [image.content_type, image.size_bytes != null ? formatBytes(image.size_bytes) : ""].filter(Boolean).join(", ")],
                 ["added", readableTime(new Date(image.created_at_ms).toISOString())], ["content hash", image.content_hash]];
  $("imgFacts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => {
    const value = el("dd", null, v);
    value.title = v;
    return [el("dt", null, k), value];
  }));
  $("imgName").value = image.name;
  const columns = (albums.get(details.album) || { columns: [] }).columns;
  const fields = columns.map((c) => attributeField(c, image.attributes[c.name]));
  details.fields = fields;
  $("imgFields").replaceChildren(...fields.map((f) => f.node));
  const declared = new Set(columns.map((c) => c.name));
  const others = Object.fromEntries(Object.entries(image.attributes).filter(([k]) => !declared.has(k)));
  details.others = others;
  $("imgOthers").value = Object.keys(others).length ? JSON.stringify(others, null, 1) : "";
}

/** A labelled input for a declared column, of its type; `read()` is the value to store (null when left empty),
 * or throws saying why the input is not one. */
function attributeField(column, value) {
  const node = el("div", "field");
  const id = `imgField-${column.name}`;
  const label = el("label", null, column.name);
  label.htmlFor = id;
  label.appendChild(el("span", "t", ` ${column.type}`));
  let input;
  if (column.type === "bool") {
    input = el("select");
    for (const [v, text] of [["", "—"], ["true", "true"], ["false", "false"]]) {
      const option = el("option", null, text);
      option.value = v;
      input.appendChild(option);
    }
    input.value = value == null ? "" : String(value);
  } else {
    input = el("input");
    input.type = column.type === "int" || column.type === "float" ? "number" : "text";
    if (column.type === "int") input.step = "1";
    if (column.type === "float") input.step = "any";
    if (column.type === "timestamp") input.placeholder = "2024-01-31T12:00:00Z";
    if (column.type === "string_list") input.placeholder = "a, b, c";
    input.value = value == null ? "" : Array.isArray(value) ? value.join(", ") : String(value);
  }
  input.id = id;
  input.dataset.column = column.name;
  if (column.type !== "bool") input.title = column.type === "string_list" ? "Items split at commas; left empty: none" : "Left empty: none";
  node.append(label, input);
  const initial = input.value;
  // The value to store; `undefined` while the field is as it was shown (a value shown otherwise than stored,
  // an empty list or a list item with a comma, is not rewritten by a save of another field).
  const numberColumn = `${column.name} is ${column.type === "int" ? "an int" : "a float"} column`;
  const read = () => {
    if (input.validity.badInput) throw new Error(`${numberColumn}: what is typed is not a number.`);
    if (input.value === initial) return undefined;
    const text = input.value.trim();
    if (text === "") return null;
    if (column.type === "int" || column.type === "float") {
      const number = Number(text);
      if (!Number.isFinite(number) || (column.type === "int" && !Number.isInteger(number)))
        throw new Error(`${numberColumn}: ${JSON.stringify(text)} is not one.`);
      return number;
    }
    if (column.type === "bool") return text === "true";
    if (column.type === "string_list") return text.split(",").map((s) => s.trim()).filter(Boolean);
    return input.value;
  };
  return { name: column.name, type: column.type, node, read, before: value === undefined ? null : value };
}

/** Whether a field's value is the one stored: a time written another way ("2024-03-01" for midnight UTC) is. */
function sameValue(value, before, type) {
  if (type === "timestamp" && value != null && before != null && Date.parse(withZone(value)) === Date.parse(before)) return true;
  return JSON.stringify(value) === JSON.stringify(before);
}

/** A time as the gateway reads it: without a zone, UTC (the browser would read a date-time as local). */
function withZone(text) {
  return /T.*(Z|[+-]\d{2}:?\d{2})$/i.test(text) || !text.includes("T") ? text : `${text}Z`;
}

/** What the form changes: {name?, attributes} with only the values that differ (null clears one). */
function detailChanges() {
  const attributes = Object.create(null);  // an attribute named __proto__ is an attribute
  for (const field of details.fields) {
    const value = field.read();
    if (value !== undefined && !sameValue(value, field.before, field.type)) attributes[field.name] = value;
  }
  const text = $("imgOthers").value.trim();
  let others = {};
  if (text) {
    try { others = JSON.parse(text); } catch (e) { throw new Error(`Other attributes: not JSON (${e.message}).`); }
    if (!others || typeof others !== "object" || Array.isArray(others)) throw new Error("Other attributes: a JSON object is needed, e.g. {\"note\": \"sale\"}.");
    if (Object.hasOwn(others, "name")) throw new Error("Other attributes: the image's name is changed in the Name field, not as an attribute.");
    const declared = details.fields.map((f) => f.name).filter((n) => Object.hasOwn(others, n));
    if (declared.length) throw new Error(`Other attributes: ${declared.join(", ")} ${declared.length === 1 ? "has its" : "have their"} own field above.`);
  }
  for (const key of Object.keys(details.others)) if (!Object.hasOwn(others, key)) attributes[key] = null;
  for (const [key, value] of Object.entries(others))
    if (JSON.stringify(value) !== JSON.stringify(details.others[key])) attributes[key] = value;
  const changes = { attributes };
  const name = $("imgName").value.trim();
  if (!name) throw new Error("The image needs a name.");
  if (name !== details.image.name) changes.name = name;
  return changes;
}

/** Whether the form holds what is not saved (input that cannot be read counts). */
function unsavedChanges() {
  if (!details || !details.loaded) return false;
  try {
    const changes = detailChanges();
    return Boolean(changes.name || Object.keys(changes.attributes).length);
  } catch (e) { return true; }
}

/** Closes the dialog, and says whether it did: with unsaved changes, the first try only says so. */
let warnedUnsaved = false;
function closeDetails() {
  if (!warnedUnsaved && unsavedChanges()) {
    warnedUnsaved = true;
    show($("imgMsg"), "Unsaved changes: Save them, or close again to leave them.", "error box");
    return false;
  }
  $("imageDialog").close();
  return true;
}

async function saveDetails() {
  warnedUnsaved = false;  // its message replaces the warning: a close after it warns again
  let changes;
  try { changes = detailChanges(); } catch (e) { return show($("imgMsg"), e.message, "error box"); }
  if (!Object.keys(changes.attributes).length && !changes.name) return show($("imgMsg"), "Nothing changed.");
  const { album, image } = details;
  setDetailsBusy(true);
  show($("imgMsg"), "Saving…");
  try {
    const { body } = await api(imagePath(album, image.id), { method: "PATCH", headers: { "Content-Type": "application/json" },
                                                             body: JSON.stringify(changes) });
    updateCards(body, album);  // also when the dialog was closed meanwhile
    if (!stillShown(image.id, album)) return;
    fillDetails(body);
    warnedUnsaved = false;
    const what = [changes.name ? "name" : "", ...Object.keys(changes.attributes)].filter(Boolean);
    show($("imgMsg"), `Saved: ${what.join(", ")}.`, "ok");
  } catch (e) { if (stillShown(image.id, album)) showError($("imgMsg"), e); }
  finally { if (stillShown(image.id, album)) setDetailsBusy(false); }
}

/** The cards and thumbnails of an image of an album (an image's id is its content's: the same photo in another
 * album has the same id). */
function nodesOf(id, album) {
  return [...document.querySelectorAll(`[data-image-id="${CSS.escape(id)}"]`)].filter((n) => n.dataset.album === album);
}

/** The results the page keeps to draw again (a proposed region's tab, the whole photo's), changed as the image
 * was: `image` its new state, null when deleted. */
function changeKept(id, album, image) {
  if (!lastSearch || lastSearch.album !== album) return;
  for (const results of [lastSearch.body.results, ...proposals.map((p) => p.results)]) {
    for (let i = results.length - 1; i >= 0; i--) {
      if (results[i].id !== id) continue;
      if (image) Object.assign(results[i], { name: image.name, attributes: image.attributes });
      else results.splice(i, 1);
    }
  }
}

/** Every card and thumbnail of the image shows its new name and attributes. */
function updateCards(image, album) {
  changeKept(image.id, album, image);
  for (const node of nodesOf(image.id, album)) {
    if (node.classList.contains("thumb")) {
      node.title = image.name;
      node.querySelector("span").textContent = image.name.split("/").pop();
      continue;
    }
    const name = node.querySelector(".name");
    name.textContent = image.name;
    name.title = `${image.name}: details`;
    const kvs = node.querySelector(".kvs.attrs");
    if (kvs) kvs.replaceWith(kvsNode(attributePairs(image.attributes, album)));
  }
}

async function deleteDetails() {
  const { album, image } = details;
  setDetailsBusy(true);
  try {
    await api(imagePath(album, image.id), { method: "DELETE" });
  } catch (e) {
    if (stillShown(image.id, album)) { setDetailsBusy(false); $("imgConfirm").hidden = true; showError($("imgMsg"), e); }
    return;
  }
  changeKept(image.id, album, null);
  browseImageGone(image.id, album);  // before its card goes: Browse counts it out
  for (const node of nodesOf(image.id, album)) node.remove();
  if (stillShown(image.id, album)) $("imageDialog").close();
  show($("albumMsg"), `Deleted ${image.name}.`, "ok");
  refreshAlbum(album, (a) => { showAlbumStats(a); showAlbumView(a); });  // its count, newest images; the results stay
}

async function loadDetailFaces(album, id) {
  try {
    const { body } = await api(`${imagePath(album, id)}/faces`);
    if (!stillShown(id, album)) return;
    details.faces = body.faces;
    drawDetailFaces();
  } catch (e) { if (stillShown(id, album)) show($("imgFacesNote"), `Faces: ${e.message}`, "error"); }
}

/** The image's faces as boxes over it; a click finds that person in the album. */
function drawDetailFaces() {
  const img = $("imgFull"), frame = $("imgFrame");
  for (const old of frame.querySelectorAll(".face-box")) old.remove();
  const faces = details && details.faces;
  show($("imgFacesNote"), faces ? (faces.length ? `${plural(faces.length, "face")}: click ${faces.length === 1 ? "it" : "one"} to find that person`
                                                : "No face found in this image.") : "");
  if (!faces || !img.naturalWidth) return;
  const scale = img.clientWidth / img.naturalWidth;
  faces.forEach((f, i) => {
    const box = faceBox(f, i, scale, img.clientWidth, `face ${i + 1}`);
    box.title = "Find this person in the album";
    box.addEventListener("click", () => {
      const { album, image } = details;
      if (closeDetails()) setQueryImage(image, album, () => findPerson(i));
    });
    frame.appendChild(box);
  });
}
$("imgFull").addEventListener("load", drawDetailFaces);
window.addEventListener("resize", drawDetailFaces);

$("imgSave").addEventListener("click", saveDetails);
$("imgDelete").addEventListener("click", () => { $("imgConfirm").hidden = false; $("imgDeleteYes").focus(); });
$("imgDeleteNo").addEventListener("click", () => { $("imgConfirm").hidden = true; });
$("imgDeleteYes").addEventListener("click", deleteDetails);
$("imgSearch").addEventListener("click", () => {
  const { album, image } = details;
  if (closeDetails()) setQueryImage(image, album);
});
// An edit after the warning is warned about again.
$("imageDialog").addEventListener("input", () => { warnedUnsaved = false; });
$("imgClose").addEventListener("click", closeDetails);
// Escape: as the close button (the browser closes the dialog by itself if asked twice in a row).
$("imageDialog").addEventListener("cancel", (e) => { e.preventDefault(); closeDetails(); });
// A click on the backdrop (outside the dialog's box) closes it, as Escape does; not a drag that began inside
// (selecting a field's text past its edge).
let pressedOnBackdrop = false;
$("imageDialog").addEventListener("pointerdown", (e) => { pressedOnBackdrop = e.target === $("imageDialog"); });
$("imageDialog").addEventListener("click", (e) => {
  if (e.target === $("imageDialog") && pressedOnBackdrop) closeDetails();
  pressedOnBackdrop = false;
});
$("imageDialog").addEventListener("close", () => { details = null; $("imgFull").removeAttribute("src"); });
