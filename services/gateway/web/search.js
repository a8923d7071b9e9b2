/* Search by image: the query photo, proposed regions, a box drawn on it. */
"use strict";

// --- search ------------------------------------------------------------------------------------------

function setQueryFile(file) {
  if (!file) return;
  clearFaces();
  queryFile = file;
  queryImage = null;
  $("queryUrl").value = "";
  proposals = [];
  setRegion(null);
  $("preview").src = URL.createObjectURL(file);
  $("preview").style.display = "block";
  search();
}

const drop = $("drop");
drop.addEventListener("click", () => $("queryFile").click());
$("queryFile").addEventListener("change", (e) => setQueryFile(e.target.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) setQueryFile(e.dataTransfer.files[0]);
});
$("queryUrl").addEventListener("input", () => {
  queryFile = null;
  queryImage = null;
  proposals = [];
  setRegion(null);
  const url = $("queryUrl").value.trim();
  $("preview").style.display = url ? "block" : "none";
  if (url) $("preview").src = url;
});
/** The query of a search, recognition or face search: the chosen file, the URL typed, or the album's image chosen
 * from a result; null when there is none. */
async function queryForm(bytes = false) {
  const form = new FormData();
  const url = $("queryUrl").value.trim();
  if (queryFile) form.append("file", queryFile, queryFile.name);
  else if (url) form.append("url", url);
  else if (!queryImage || queryImage.album !== currentAlbum()) return null;
  else if (!bytes) form.append("image_id", queryImage.id);
  else {  // a box on it: its bytes, which the box cuts
    const answer = await fetch(queryImage.url);
    if (!answer.ok) throw new Error(`the image ${queryImage.name} could not be read (HTTP ${answer.status})`);
    form.append("file", await answer.blob(), queryImage.name.split("/").pop());
  }
  return form;
}

/** A result's "Search with this": the album's image becomes the query (read by the gateway from the album), and
 * `then` runs with it (a search; a face search from the image's details). */
function setQueryImage(image, album, then = search) {
  clearFaces();
  queryFile = null;
  queryImage = { id: image.id, name: image.name, url: image.url, album };
  $("queryUrl").value = "";
  proposals = [];
  setRegion(null);
  $("preview").src = image.url;
  $("preview").style.display = "block";
  $("preview").scrollIntoView({ block: "nearest" });
  then();
}

$("search").addEventListener("click", () => search());
for (const id of ["where", "filter", "maxDistance", "topK"])
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });

async function search() {
  const album = currentAlbum();
  if (!album) return show($("searchMsg"), "Create or choose an album first.", "error");
  clearFaces();
  let form;
  try { form = await queryForm(Boolean(queryRegion)); } catch (e) { return show($("searchMsg"), e.message, "error"); }
  if (album !== currentAlbum()) return;  // another album chosen meanwhile
  if (!form) return show($("searchMsg"), "Drop a photo or paste an image URL.", "error");
  form.append("mode", $("mode").value);
  const params = new URLSearchParams({ top_k: $("topK").value || "12" });
  if ($("filter").value.trim()) params.set("filter", $("filter").value.trim());
  if ($("where").value.trim()) params.set("where", $("where").value.trim());
  if ($("maxDistance").value.trim()) params.set("max_distance", $("maxDistance").value.trim());
  if (queryRegion) params.set("region", queryRegion.join(","));
  else if (!form.has("image_id")) params.set("proposals", String(PROPOSALS));  // they need the photo's own bytes
  $("search").disabled = true;
  show($("searchMsg"), "Searching…");
  $("recognition").hidden = true;
  $("results").replaceChildren();
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/search?${params}`, { method: "POST", body: form });
    if (album !== currentAlbum()) return;  // an answer about the album left: not shown under another
    lastSearch = { body, album, params, byImage: form.has("image_id") };
    setProposals(body.regions || []);
  } catch (e) {
    if (album !== currentAlbum()) return;
    lastSearch = null;  // the error, not the previous search's results
    setProposals([]);
    showError($("searchMsg"), e);
  }
  finally { $("search").disabled = false; }
}

// --- regions the search proposes: boxes on the photo; a click on one (or its tab) shows its results ------

const PROPOSALS = 3;
/** The last search's answer; its `regions` are the proposed regions, each with its own results. */
let lastSearch = null;
let proposals = [];
/** Which proposed region's results are shown: -1 the whole photo's. */
let chosenProposal = -1;

function setProposals(regions) {
  proposals = regions;
  chosenProposal = -1;
  drawProposals();
  if (lastSearch) showChosen();
}

function chooseProposal(index) {
  chosenProposal = index === chosenProposal ? -1 : index;
  drawProposals();
  showChosen();
}

function drawProposals() {
  const img = $("preview"), frame = $("queryFrame"), tabs = $("proposalTabs");
  for (const old of frame.querySelectorAll(".proposal-box")) old.remove();
  const shown = queryRegion ? [] : proposals;
  tabs.hidden = !shown.length;
  if (!shown.length) return tabs.replaceChildren();
  const scale = img.naturalWidth && img.clientWidth ? img.clientWidth / img.naturalWidth : 0;
  shown.forEach((p, i) => {
    const box = el("div", "proposal-box" + (i === chosenProposal ? " chosen" : ""));
    const { x, y, width, height } = p.region;
    Object.assign(box.style, { left: `${x * scale}px`, top: `${y * scale}px`, width: `${width * scale}px`, height: `${height * scale}px` });
    box.dataset.proposal = String(i);
    box.title = `region ${i + 1}: ${x},${y},${width},${height} (x,y,w,h) · click to see what it finds`;
    box.appendChild(el("b", "", String(i + 1)));
    box.style.zIndex = String(1 + shown.filter((o) => o.region.width * o.region.height > width * height).length);  // smaller on top
    box.hidden = !scale;
    frame.appendChild(box);
  });
  const tab = (label, index) => {
    const button = el("button", "", label);
    button.type = "button";
    button.dataset.proposal = String(index);
    button.setAttribute("aria-pressed", String(index === chosenProposal));
    button.addEventListener("click", () => { if (index !== chosenProposal) chooseProposal(index); });
    return button;
  };
  tabs.replaceChildren(el("span", "hint", "Regions found in the photo:"), tab("Whole photo", -1),
                       ...shown.map((p, i) => tab(`Region ${i + 1}`, i)));
}

function showChosen() {
  const { body, album, params, byImage } = lastSearch;
  const region = chosenProposal >= 0 ? proposals[chosenProposal] : null;
  const results = region ? region.results : body.results;
  const n = results.length;
  const what = region ? ` for region ${chosenProposal + 1} (${Object.values(region.region).join(",")})`
    : proposals.length ? " for the whole photo" : "";
  const regions = !region && proposals.length
    ? ` · ${proposals.length} region${proposals.length === 1 ? "" : "s"} proposed: click one to see its results` : "";
  show($("searchMsg"), `${n} result${n === 1 ? "" : "s"}${what} in ${body.took_ms.toFixed(1)} ms · ${body.metric} distance · ${body.model.split("/")[0]}${regions}`);
  $("results").replaceChildren();
  if (!n) $("results").replaceChildren(emptyState(searchEmptyText(params, byImage)));
  else renderResults(results, album);
}

// --- a box on the query photo: draw it, move it, resize it by a corner; each change searches again ------

/** The box in the photo's own pixels (as shown: EXIF orientation applied), [x, y, w, h]; null: the whole photo. */
let queryRegion = null;
let regionDrag = null;
const MIN_REGION = 8;

function setRegion(region) {
  queryRegion = region;
  drawRegion();
  drawProposals();
}

function drawRegion() {
  const img = $("preview"), box = $("regionBox");
  $("regionInfo").hidden = !queryRegion;
  if (!queryRegion || !img.naturalWidth || !img.clientWidth) { box.hidden = true; return; }
  const scale = img.clientWidth / img.naturalWidth;
  const [x, y, w, h] = queryRegion;
  Object.assign(box.style, { left: `${x * scale}px`, top: `${y * scale}px`, width: `${w * scale}px`, height: `${h * scale}px` });
  box.hidden = false;
  $("regionText").textContent = `searching the box ${queryRegion.join(",")} (x,y,w,h) of the ${img.naturalWidth}×${img.naturalHeight} photo`;
}

/** The box a drag makes from where it started to `point` (photo pixels), kept inside the photo. */
function draggedRegion(drag, [px, py], width, height) {
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  if (drag.kind === "move") {
    const [x, y, w, h] = drag.from;
    const nx = clamp(Math.round(x + px - drag.start[0]), 0, width - w), ny = clamp(Math.round(y + py - drag.start[1]), 0, height - h);
    return [nx, ny, w, h];
  }
  let anchor = drag.start;  // drawing: from where the pointer went down
  if (drag.kind !== "draw") {  // a corner: the opposite corner stays
    const [x, y, w, h] = drag.from;
    anchor = [drag.kind.includes("w") ? x + w : x, drag.kind.includes("n") ? y + h : y];
  }
  const x0 = Math.round(Math.min(anchor[0], px)), y0 = Math.round(Math.min(anchor[1], py));
  const x1 = Math.round(Math.max(anchor[0], px)), y1 = Math.round(Math.max(anchor[1], py));
  return [x0, y0, x1 - x0, y1 - y0];
}

const queryFrame = $("queryFrame");
queryFrame.addEventListener("pointerdown", (e) => {
  const img = $("preview");
  if (!img.naturalWidth || img.style.display === "none" || e.button !== 0) return;
  e.preventDefault();
  const rect = img.getBoundingClientRect();
  const scale = img.naturalWidth / rect.width;
  const at = (ev) => [Math.max(0, Math.min(img.naturalWidth, (ev.clientX - rect.left) * scale)),
                      Math.max(0, Math.min(img.naturalHeight, (ev.clientY - rect.top) * scale))];
  const kind = e.target.dataset.handle || (e.target.id === "regionBox" && queryRegion ? "move" : "draw");
  regionDrag = { kind, start: at(e), from: queryRegion, at, moved: false, proposal: e.target.closest(".proposal-box") };
  queryFrame.setPointerCapture(e.pointerId);
});
queryFrame.addEventListener("pointermove", (e) => {
  if (!regionDrag) return;
  const img = $("preview");
  const region = draggedRegion(regionDrag, regionDrag.at(e), img.naturalWidth, img.naturalHeight);
  if (regionDrag.kind !== "draw" || (region[2] >= 2 && region[3] >= 2)) { regionDrag.moved = true; setRegion(region); }
});
queryFrame.addEventListener("pointerup", () => {
  const drag = regionDrag;
  regionDrag = null;
  if (drag && !drag.moved && drag.proposal) return chooseProposal(Number(drag.proposal.dataset.proposal));
  if (!drag || !drag.moved) return;
  if (queryRegion[2] < MIN_REGION || queryRegion[3] < MIN_REGION) return setRegion(drag.from);  // a click, not a box
  search();
});
$("preview").addEventListener("load", () => { drawRegion(); drawProposals(); });
// A file the browser cannot show (not an image, cut short): no broken-image icon; the search says what is wrong.
$("preview").addEventListener("error", () => { $("preview").style.display = "none"; });
window.addEventListener("resize", () => { drawRegion(); drawProposals(); drawQueryFaces(); });
$("clearRegion").addEventListener("click", () => { setRegion(null); search(); });

