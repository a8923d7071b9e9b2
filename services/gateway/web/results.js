/* Faces and recognition of the query photo, and how results are shown. */
"use strict";

// --- faces: find the person of the query photo's face; boxes on the query and on each result ------------

/** The last face search: its query faces (boxes in the photo's pixels) and which one searched. */
let faceSearch = null;
$("findPerson").addEventListener("click", () => findPerson(0));

function clearFaces() {
  faceSearch = null;
  for (const old of $("queryFrame").querySelectorAll(".face-box")) old.remove();
}

async function findPerson(face) {
  if (!currentAlbum()) return show($("searchMsg"), "Create or choose an album first.", "error");
  const album = currentAlbum();
  const region = queryRegion;  // a box drawn: the face is looked for in it (a small face in a large photo)
  let form;
  try { form = await queryForm(Boolean(region)); } catch (e) { return show($("searchMsg"), e.message, "error"); }
  if (album !== currentAlbum()) return;
  if (!form) return show($("searchMsg"), "Drop a photo of the person or paste an image URL.", "error");
  const params = new URLSearchParams({ top_k: $("topK").value || "12", face: String(face) });
  if (region) params.set("region", region.join(","));
  if ($("faceDistance").value.trim()) params.set("max_distance", $("faceDistance").value.trim());
  $("findPerson").disabled = true;
  show($("searchMsg"), "Looking for faces…");
  $("recognition").hidden = true;
  lastSearch = null;  // the copy search's results and proposed regions give way to the person's photos
  setProposals([]);
  $("results").replaceChildren();
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/faces/search?${params}`, { method: "POST", body: form });
    if (album !== currentAlbum()) return;
    faceSearch = body;
    if (!params.has("max_distance")) $("faceDistance").placeholder = `${body.max_distance} (the gateway's)`;
    drawQueryFaces();
    const n = body.results.length;
    const others = body.faces.length > 1 ? ` · ${body.faces.length} faces in the photo: click another to search it` : "";
    const where = region ? " in the box" : "";
    show($("searchMsg"), `${n} photo${n === 1 ? "" : "s"} of this person${where} (face distance ≤ ${body.max_distance}) in ${body.took_ms.toFixed(1)} ms${others}`);
    if (!n) $("results").replaceChildren(emptyState(form.has("image_id") ? "No other photo of this album shows this person."
                                                                       : "Nobody in this album looks like this person."));
    for (const hit of body.results) $("results").appendChild(faceCard(hit, album));
  } catch (e) { if (album === currentAlbum()) { clearFaces(); showError($("searchMsg"), e); } }
  finally { $("findPerson").disabled = !(albums.get(currentAlbum()) || {}).faces; }
}

/** The query photo's faces as boxes over it; the one searched is highlighted, a click searches another. */
function drawQueryFaces() {
  const img = $("preview"), frame = $("queryFrame");
  for (const old of frame.querySelectorAll(".face-box")) old.remove();
  if (!faceSearch) return;
  const scale = img.naturalWidth && img.clientWidth ? img.clientWidth / img.naturalWidth : 0;
  faceSearch.faces.forEach((f, i) => {
    const label = faceSearch.faces.length > 1 ? (i === faceSearch.face ? "searched" : `face ${i + 1}`) : "";
    const box = faceBox(f, i, scale, img.clientWidth, label);
    box.classList.toggle("chosen", i === faceSearch.face);
    box.title = faceSearch.recognised ? "the face recognised" : i === faceSearch.face ? "the face searched" : "click to find this person instead";
    box.addEventListener("pointerdown", (e) => e.stopPropagation());
    box.addEventListener("click", (e) => { e.stopPropagation(); if (i !== faceSearch.face) findPerson(i); });
    frame.appendChild(box);
  });
}
$("preview").addEventListener("load", drawQueryFaces);

/** The `i`th face of a photo shown `scale` times its size (`width` pixels wide) as a box over it, with its label if
 * any: under the box when the box is at the photo's top edge, ending at its right side when the box is near the
 * right edge (the frame cuts what sticks out). */
function faceBox(face, i, scale, width, label) {
  const box = el("div", "face-box");
  Object.assign(box.style, { left: `${face.x * scale}px`, top: `${face.y * scale}px`, width: `${face.width * scale}px`,
                             height: `${face.height * scale}px` });
  box.dataset.face = String(i);
  if (label) box.appendChild(el("b", "", label));
  box.classList.toggle("label-below", face.y * scale < 18);
  box.classList.toggle("label-right", face.x * scale + 70 > width);
  return box;
}

/** A result of a face search: the whole photo, its matched face boxed (positions as fractions of the square). */
function faceCard(hit, album) {
  const card = imageCard(hit, [[["distance", hit.distance]], attributePairs(hit.attributes || {}, album)]);
  card.classList.add("face");
  const side = Math.max(hit.width, hit.height) || 1;
  const [ox, oy] = [(1 - hit.width / side) / 2, (1 - hit.height / side) / 2];
  const f = hit.face;
  const box = el("div", "face-box");
  Object.assign(box.style, { left: `${100 * (ox + f.x / side)}%`, top: `${100 * (oy + f.y / side)}%`,
                             width: `${100 * f.width / side}%`, height: `${100 * f.height / side}%` });
  box.title = `face at ${f.x},${f.y} ${f.width}x${f.height}`;
  card.querySelector("a").appendChild(box);
  return card;
}

$("recognize").addEventListener("click", () => recognize());
$("recognizeLabel").addEventListener("keydown", (e) => { if (e.key === "Enter") recognize(); });

/** Recognise: the label the query photo most likely has among the album's images' values of an attribute. */
async function recognize() {
  if (!currentAlbum()) return show($("searchMsg"), "Create or choose an album first.", "error");
  const label = $("recognizeLabel").value.trim();
  if (!label) return show($("searchMsg"), "Name the label attribute to recognise by, e.g. category.", "error");
  const album = currentAlbum();
  const form = await queryForm();
  if (album !== currentAlbum()) return;
  if (!form) return show($("searchMsg"), "Drop a photo or paste an image URL.", "error");
  const params = new URLSearchParams({ label, evidence: $("evidence").value.trim() || "6" });
  if ($("threshold").value.trim()) params.set("threshold", $("threshold").value.trim());
  if ($("byFace").checked) params.set("faces", "true");
  $("recognize").disabled = true;
  show($("searchMsg"), "Recognising…");
  $("recognition").hidden = true;
  clearFaces();
  lastSearch = null;  // the copy search's results and regions give way to the answer (it reads the whole photo)
  setProposals([]);
  setRegion(null);
  $("results").replaceChildren();
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/recognize?${params}`, { method: "POST", body: form });
    if (album !== currentAlbum()) return;
    const byFace = body.face ? " · by the face boxed on the photo" : "";
    show($("searchMsg"), `Recognised in ${body.took_ms.toFixed(1)} ms · ${body.calibration.images} labelled images, ${plural(body.calibration.labels, "label")}${byFace}`);
    if (body.face) {  // which face was recognised, boxed on the query
      faceSearch = { faces: [body.face], face: 0, recognised: true };
      drawQueryFaces();
    }
    renderRecognition(body, album);
  } catch (e) { if (album === currentAlbum()) showError($("searchMsg"), e); }
  finally { $("recognize").disabled = false; }
}

function percent(x) { return `${Math.round(x * 100)} %`; }

function renderRecognition(body, album) {
  const box = $("recognition");
  box.className = "recognition" + (body.unknown ? " unknown" : "");
  const answer = el("div", "answer");
  const top = body.candidates[0];
  answer.append(el("span", "label", body.unknown ? "unknown" : body.label));
  answer.append(el("span", "confidence", body.unknown
    ? `none of the album's ${body.attribute} labels` + (top ? ` (nearest: ${top.label}, ${percent(top.confidence)})` : "")
    : `${percent(body.confidence)} confidence`));
  const bar = el("div", "bar");
  const fill = el("span");
  fill.style.width = percent(body.unknown ? 1 - body.known : body.confidence).replace(" ", "");
  bar.appendChild(fill);
  const c = body.calibration;
  const measured = c.top1 == null ? "too few labelled images to calibrate" :
    `calibrated on the album: ${percent(c.top1)} right when each of its images is left out`;
  const why = el("div", "why", `${body.attribute} · known ${body.known.toFixed(2)} (unknown below ${body.threshold.toFixed(2)}) · ${measured}`);
  box.replaceChildren(answer, bar, why);
  if (body.candidates.length > 1) {
    box.appendChild(el("div", "candidates", "Also: " + body.candidates.slice(1)
      .map((v) => `${v.label} ${percent(v.confidence)}`).join(" · ")));
  }
  if (body.evidence.length) {
    box.appendChild(el("h3", "", "Nearest labelled images"));
    const grid = el("div", "grid evidence");
    for (const e of body.evidence) grid.appendChild(imageCard(e, [[["distance", e.distance], [body.attribute, e.labels.join(", ")]]]));
    box.appendChild(grid);
  }
  box.hidden = false;
}

/** Why a search found nothing; `byImage`: its query was an image of the album, which it leaves out. */
function searchEmptyText(params, byImage = false) {
  const limits = [];
  if (params.has("where") || params.has("filter")) limits.push("the filter");
  if (params.has("max_distance")) limits.push(`within distance ${params.get("max_distance")}`);
  const image = byImage ? "other image" : "image";
  if (limits.length) return `No ${image} matches ${limits.join(" and ")}.`;
  return byImage ? "The album has no other image." : "The album has no images yet.";
}

function emptyState(text) { return el("div", "empty", text); }

/** The attributes of a hit: the album's declared columns in their order, then the undeclared ones. */
function attributePairs(attributes, album) {
  const declared = (albums.get(album) || { columns: [] }).columns;
  const types = columnTypes(album);
  const names = declared.map((c) => c.name).filter((n) => n in attributes);
  // tag_scores: the network's probabilities of the tags, read beside them in an image's details, not on cards.
  for (const key of Object.keys(attributes)) if (!names.includes(key) && key !== "tag_scores") names.push(key);
  const pairs = names.map((n) => [n, attributes[n], types[n]]);
  pairs.attributes = true;
  return pairs;
}

function renderResults(results, album) {
  const grid = $("results");
  for (const r of results) {
    const found = [["distance", r.distance]];
    if (r.matches != null) found.push(["matches", r.matches]);
    const card = imageCard(r, [found, attributePairs(r.attributes || {}, album)]);
    if (r.matches != null) card.querySelector(".kv[data-column=matches]").title = "keypoints of the query verified on this image";
    card.querySelector(".meta").appendChild(searchWithThis(r, album));
    grid.appendChild(card);
  }
}

/** A card's "Search with this": the album searched with the image as the query. */
function searchWithThis(image, album) {
  const again = el("button", "link again", "Search with this");
  again.type = "button";
  again.title = "Search the album with this image as the query";
  again.addEventListener("click", () => setQueryImage(image, album));
  return again;
}

function whereExample(columns) {
  const parts = [];
  const number = columns.find((c) => c.type === "float" || c.type === "int");
  const text = columns.find((c) => c.type === "string");
  const flag = columns.find((c) => c.type === "bool");
  if (number) parts.push(`${number.name} < 50`);
  if (text) parts.push(`${text.name} in ('red', 'blue')`);
  if (flag && parts.length < 2) parts.push(flag.name);
  return parts.join(" and ");
}

