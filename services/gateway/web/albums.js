/* Albums: chosen, created with columns; images added to one. */
"use strict";

// --- albums ----------------------------------------------------------------------------------------

function currentAlbum() { return $("album").value; }
function columnTypes(album) {
  const a = albums.get(album);
  return Object.assign({}, BUILTIN_TYPES, Object.fromEntries((a ? a.columns : []).map((c) => [c.name, c.type])));
}

async function loadAlbums(select) {
  try {
    const { body } = await api("/v1/albums");
    albums = new Map(body.albums.map((a) => [a.name, a]));
    const keep = select || currentAlbum() || localStorage.getItem("album");
    $("album").replaceChildren();
    if (!body.albums.length) {
      const none = el("option", null, "no albums yet");
      none.value = "";
      $("album").appendChild(none);
    }
    for (const a of body.albums) {
      const opt = el("option", null, `${a.name} (${a.image_count})`);
      opt.value = a.name;
      $("album").appendChild(opt);
    }
    if (albums.has(keep)) $("album").value = keep;
    albumChanged();
  } catch (e) { showError($("searchMsg"), e); }
}

// Declared column types a label attribute may have (an undeclared attribute may be named too).
const LABEL_TYPES = ["string", "int", "bool", "string_list"];

/** The album the search area's results are of: another one chosen clears them (the query photo stays). */
let resultsAlbum = null;

/** The chosen album's count, model and metric beside its name. */
function showAlbumStats(a) {
  $("albumStats").textContent = a ? `${a.image_count} image${a.image_count === 1 ? "" : "s"} · ${a.model.split("/")[0]} · ${a.metric}` : "";
  $("albumStats").title = a ? `model ${a.model}, ${a.dim} dimensions` : "";
}

function albumChanged() {
  const a = albums.get(currentAlbum());
  if (currentAlbum() !== resultsAlbum) {
    resultsAlbum = currentAlbum();
    if (queryImage) {  // an image of the album left: no query any more
      queryImage = null;
      $("preview").style.display = "none";
      setRegion(null);
    }
    lastSearch = null;
    setProposals([]);
    $("results").replaceChildren();
    show($("searchMsg"), "");
    show($("albumMsg"), "");  // "Deleted x." said of another album
  }
  showAlbumStats(a);
  $("albumColumns").replaceChildren();
  for (const c of a ? a.columns : []) {
    const chip = el("span", "chip", c.name);
    chip.append(": ", el("span", "t", c.type));
    $("albumColumns").appendChild(chip);
  }
  if (a && a.faces) {
    const chip = el("span", "chip", "faces");
    chip.title = `indexes faces (${a.face_model})`;
    $("albumColumns").appendChild(chip);
  }
  if (a && a.details) {
    const chip = el("span", "chip", "details");
    chip.title = "keeps a keypoint index: a close-up of a detail finds the photo it was cut from";
    $("albumColumns").appendChild(chip);
  }
  $("findPerson").disabled = !(a && a.faces);
  $("findPerson").title = a && a.faces ? "The album's photos where the person of the query photo's face appears"
    : "This album does not index faces: create one with \"Index faces\"";
  $("byFaceLine").hidden = !(a && a.faces);
  if (!(a && a.faces)) $("byFace").checked = false;
  clearFaces();
  const columns = a ? a.columns : [];
  $("addAttrs").placeholder = columns.length
    ? "{" + columns.slice(0, 3).map((c) => `${JSON.stringify(c.name)}: ${JSON.stringify(SAMPLE_VALUES[c.type])}`).join(", ") + "}"
    : '{"category": "shoes"}';
  $("where").placeholder = whereExample(columns) || "category = 'shoes'";
  const labels = columns.filter((c) => LABEL_TYPES.includes(c.type)).map((c) => c.name);
  $("labelColumns").replaceChildren(...labels.map((n) => { const o = el("option"); o.value = n; return o; }));
  $("recognizeLabel").placeholder = labels[0] || "category";
  $("recognition").hidden = true;
  if (a) localStorage.setItem("album", a.name);
  sampleImageName = "";
  renderExamples();
  if (a && a.image_count) loadSampleName(a.name);
  showAlbumView(a);
}

async function loadSampleName(album) {
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/images?limit=1`);
    if (album === currentAlbum() && body.images.length) { sampleImageName = body.images[0].name; renderExamples(); }
  } catch (e) { /* the examples keep a placeholder name */ }
}

/** Reloads one album (GET /v1/albums/{album}): its count, once a job has added to it or an image was deleted;
 * `redraw(album)` shows it again if it is the one chosen (all of it, by default). */
async function refreshAlbum(name, redraw = albumChanged) {
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(name)}`);
    albums.set(body.name, body);
    const option = [...$("album").options].find((o) => o.value === body.name);
    if (option) option.textContent = `${body.name} (${body.image_count})`;
    if (body.name === currentAlbum()) redraw(body);
  } catch (e) { showError($("jobsMsg"), e); }
}

$("album").addEventListener("change", albumChanged);
$("refresh").addEventListener("click", () => loadAlbums());

// --- new album ---------------------------------------------------------------------------------------

function addColumnRow() {
  const row = el("div", "row column-row");
  const name = el("input");
  name.type = "text"; name.className = "col-name code"; name.placeholder = "column name";
  name.pattern = "[a-z_][a-z0-9_]{0,62}"; name.setAttribute("aria-label", "Column name");
  const type = el("select", "col-type");
  type.setAttribute("aria-label", "Column type");
  for (const t of COLUMN_TYPES) { const opt = el("option", null, t); opt.value = t; type.appendChild(opt); }
  const remove = el("button", "icon", "×");
  remove.type = "button"; remove.title = "Remove this column"; remove.setAttribute("aria-label", "Remove this column");
  remove.addEventListener("click", () => row.remove());
  row.append(name, type, remove);
  $("newColumns").appendChild(row);
  name.focus();
}

function declaredColumns() {
  return [...$("newColumns").querySelectorAll(".column-row")]
    .map((row) => ({ name: row.querySelector(".col-name").value.trim(), type: row.querySelector(".col-type").value }))
    .filter((c) => c.name);
}

$("addColumn").addEventListener("click", addColumnRow);
$("create").addEventListener("click", async () => {
  const name = $("newAlbum").value.trim();
  if (!name) return show($("createMsg"), "Name the album: letters, digits, '-' and '_', e.g. holidays.", "error");
  const columns = declaredColumns();
  try {
    const faces = $("newFaces").checked;
    const details = $("newDetails").checked;
    const { body: album } = await api("/v1/albums", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, columns, faces, details }) });
    showNewAlbum(album);  // at once; the listing (every album's count) is read again below
    const typed = columns.length ? ` with ${columns.length} column${columns.length === 1 ? "" : "s"}` : "";
    const keeps = [faces && "indexing faces", details && "finding details"].filter(Boolean).map((w) => `, ${w}`).join("");
    show($("createMsg"), `Album "${name}" created${typed}${keeps}.`, "ok");
    $("newAlbum").value = "";
    $("newFaces").checked = false;
    $("newDetails").checked = false;
    $("newColumns").replaceChildren();
    await loadAlbums(name);
  } catch (e) { showError($("createMsg"), e); }
});

/** A just-created album, chosen in the selector before the album listing is read again. */
function showNewAlbum(album) {
  albums.set(album.name, album);
  [...$("album").options].filter((o) => !o.value).forEach((o) => o.remove());  // "no albums yet"
  if (![...$("album").options].some((o) => o.value === album.name)) {
    const option = el("option", null, `${album.name} (${album.image_count})`);
    option.value = album.name;
    $("album").appendChild(option);
  }
  $("album").value = album.name;
  albumChanged();
}

// --- deleting an album, asked first --------------------------------------------------------------------

$("deleteAlbum").addEventListener("click", () => {
  const album = albums.get(currentAlbum());
  if (!album) return;
  $("reembedConfirm").hidden = true;
  $("deleteAlbumText").textContent = `Delete the album "${album.name}" and its ${plural(album.image_count, "image")}? `
    + "Their bytes, vectors, faces and features go with it; this cannot be undone.";
  $("deleteAlbumConfirm").hidden = false;
  $("deleteAlbumNo").focus();
});
$("deleteAlbumNo").addEventListener("click", () => { $("deleteAlbumConfirm").hidden = true; });
$("deleteAlbumYes").addEventListener("click", async () => {
  const album = albums.get(currentAlbum());
  if (!album) return;
  $("deleteAlbumYes").disabled = true;
  try {
    await api(`/v1/albums/${encodeURIComponent(album.name)}`, { method: "DELETE" });
    $("deleteAlbumConfirm").hidden = true;
    localStorage.removeItem("album");
    await loadAlbums();
    show($("createMsg"), `Album "${album.name}" deleted, with its ${plural(album.image_count, "image")}.`, "ok");
  } catch (e) { showError($("jobsMsg"), e); }
  finally { $("deleteAlbumYes").disabled = false; }
});

// --- add images --------------------------------------------------------------------------------------

$("addPick").addEventListener("click", () => $("addFiles").click());
$("addFiles").addEventListener("change", (e) => {
  const files = [...e.target.files];
  if (files.length) setPicked("addPicked", [files.length === 1 ? files[0].name : plural(files.length, "image"),
                                            formatBytes(files.reduce((n, f) => n + f.size, 0))]);
});
$("add").addEventListener("click", async () => {
  const files = $("addFiles").files;
  if (!currentAlbum()) return show($("addMsg"), "Create or choose an album first.", "error");
  if (!files.length) return show($("addMsg"), "Choose one or more images.", "error");
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  if ($("addAttrs").value.trim()) form.append("attributes", $("addAttrs").value.trim());
  form.append("on_duplicate", $("addOnDuplicate").value);
  $("add").disabled = true;
  show($("addMsg"), `Uploading ${files.length} image(s)…`);
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(currentAlbum())}/images`, { method: "POST", body: form });
    const near = [body.skipped && `${body.skipped} skipped (near-duplicate)`, body.replaced && `${body.replaced} replaced`].filter(Boolean);
    const lines = [[`${body.added} added`, `${body.duplicates} duplicate(s)`, ...near, `${body.failed} failed`].join(", ") + "."];
    // The server's message may name the image itself ("image 'a.jpg': …"): named once here.
    for (const r of body.results) if (r.error) lines.push(`• ${r.name}: ${r.error.message.replace(`image '${r.name}': `, "")} (${r.error.reason})`);
    for (const r of body.results) if (r.near) lines.push(`• ${r.name}: ${r.status === "replaced" ? "replaced" : "not added"}, a near-duplicate of an image of the album`);
    show($("addMsg"), lines.join("\n"), body.failed ? "error" : "ok");
    if (!body.failed) {  // kept otherwise, to send again once the attributes are mended (those added: duplicates)
      $("addFiles").value = "";
      $("addPicked").textContent = "a few at a time; many go faster as an import";
    }
    await refreshAlbum(currentAlbum());
  } catch (e) { showError($("addMsg"), e); }
  finally { $("add").disabled = false; }
});

