/* Browsing an album: its images by a word (their labels), a filter and an order, a page at a time. */
"use strict";

const BROWSE_PAGE = 48;
// What the last "Show" asked for, so that "More" asks for the next page of the same.
let browsing = null;

/** The orders offered: newest and oldest first, by name, then each declared column both ways (images without a
 *  value last either way: "price ↓" is the dearest first). */
function fillBrowseOrders(album) {
  const select = $("browseOrder");
  const kept = select.value;
  const options = [["created_at desc", "newest first"], ["created_at", "oldest first"], ["name", "name"]];
  for (const c of (albums.get(album) || { columns: [] }).columns) {
    options.push([c.name, `${c.name} ↑`], [`${c.name} desc`, `${c.name} ↓`]);
  }
  select.replaceChildren(...options.map(([value, text]) => { const o = el("option", null, text); o.value = value; return o; }));
  select.value = options.some(([value]) => value === kept) ? kept : "created_at desc";
}

/** Leaves nothing of another album's browsing (called when the album changes). */
function clearBrowse(album) {
  browsing = null;
  fillBrowseOrders(album);
  $("browseResults").replaceChildren();
  $("browseMore").hidden = $("browseExport").hidden = true;
  show($("browseMsg"), "");
}

async function browse() {
  const album = currentAlbum();
  if (!album) return show($("browseMsg"), "Create or choose an album first.", "error");
  const [orderBy, direction] = $("browseOrder").value.split(" ");
  browsing = { album, word: $("browseWord").value.trim(), where: $("browseWhere").value.trim(), orderBy,
               desc: direction === "desc", offset: 0, total: null };
  $("browseResults").replaceChildren();
  $("browseMore").hidden = $("browseExport").hidden = true;
  show($("browseMsg"), "Finding…");
  await browsePage(browsing);
}

/** The next page of `asked`, added below the cards shown; the total is counted beside the first page (a count
 *  takes no word: with one, the message says how many are shown so far). */
async function browsePage(asked) {
  const path = `/v1/albums/${encodeURIComponent(asked.album)}/images`;
  const params = new URLSearchParams({ limit: String(BROWSE_PAGE), offset: String(asked.offset), order_by: asked.orderBy });
  if (asked.desc) params.set("desc", "true");
  params.set("nulls", "last");
  if (asked.word) params.set("tag", asked.word);
  if (asked.where) params.set("where", asked.where);
  $("browse").disabled = $("browseMore").disabled = true;
  asked.loading = true;
  try {
    const counting = asked.offset || asked.word ? null
      : api(`${path}/count?${new URLSearchParams(asked.where ? { where: asked.where } : {})}`);
    const [{ body }, counted] = await Promise.all([api(`${path}?${params}`), counting]);
    if (counted) asked.total = counted.body.count;
    if (browsing !== asked) return;  // asked again, or another album chosen, meanwhile
    asked.offset += body.images.length;
    const full = body.images.length === BROWSE_PAGE;
    $("browseMore").hidden = !full || (asked.total != null && asked.offset >= asked.total);
    for (const image of body.images) $("browseResults").appendChild(browseCard(image, asked));
    if (asked.offset) { show($("browseMsg"), browseSummary(asked, full)); showExport(asked); }
    else { show($("browseMsg"), ""); $("browseResults").replaceChildren(emptyState(browseEmptyText(asked))); }
  } catch (e) {
    if (browsing === asked) showError($("browseMsg"), e);
  } finally {
    asked.loading = false;
    // Only the browsing shown: a late answer to an earlier one must not let "More" ask for a page twice.
    if (!browsing || !browsing.loading) $("browse").disabled = $("browseMore").disabled = false;
  }
}

/** An image deleted (its details' Delete): one fewer shown and matching, so that "More" asks from the right place. */
function browseImageGone(id, album) {
  if (!browsing || browsing.album !== album) return;
  const shown = [...$("browseResults").querySelectorAll(".card")].some((c) => c.dataset.imageId === id && c.dataset.album === album);
  if (!shown) return;
  browsing.offset -= 1;
  if (browsing.total != null) browsing.total -= 1;
  if (browsing.offset) show($("browseMsg"), browseSummary(browsing, !$("browseMore").hidden));
}

/** The download of every image the browsing shows (all pages), by id: GET .../export with its word and filter. */
function showExport(asked) {
  const params = new URLSearchParams();
  if (asked.word) params.set("tag", asked.word);
  if (asked.where) params.set("where", asked.where);
  const query = params.toString();
  $("browseExport").href = `/v1/albums/${encodeURIComponent(asked.album)}/export${query ? "?" + query : ""}`;
  $("browseExport").hidden = false;
}

/** A card: with a word, the image's tags and their probabilities first; then its attributes; "Search with this". */
function browseCard(image, asked) {
  const a = image.attributes || {};
  const groups = [];
  const attributes = { ...a };
  if (asked.word) {
    const scores = a.tag_scores || [];
    // One line per tag, its probability beside it (tags set by hand have none).
    groups.push((a.tags || []).map((t, i) => [t, scores[i] != null ? Number(scores[i]).toFixed(2) : ""]));
    delete attributes.tags; delete attributes.tag_scores;
  }
  groups.push(attributePairs(attributes, asked.album));
  const card = imageCard(image, groups);
  card.querySelector(".meta").appendChild(searchWithThis(image, asked.album));
  return card;
}

function browseSummary(asked, full) {
  const matching = asked.where ? ` matching ${asked.where}` : "";
  if (asked.word) return `${asked.offset}${full ? "+" : ""} image${asked.offset === 1 ? "" : "s"} tagged “${asked.word}”${matching}`;
  return `${asked.offset} of ${plural(asked.total ?? asked.offset, "image")}${matching}`;
}

function browseEmptyText(asked) {
  if (asked.word) return `No image of ${asked.album} has a label named “${asked.word}”${asked.where ? " and matches the filter" : ""}.`;
  return asked.where ? `No image of ${asked.album} matches ${asked.where}.` : `${asked.album} has no images yet.`;
}

$("browse").addEventListener("click", () => browse());
$("browseMore").addEventListener("click", () => { if (browsing) browsePage(browsing); });
for (const id of ["browseWord", "browseWhere"]) {
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") browse(); });
}
$("browseOrder").addEventListener("change", () => { if (browsing) browse(); });
$("browseAll").addEventListener("click", () => {
  $("browseWord").value = $("browseWhere").value = "";
  $("browseOrder").value = "created_at desc";
  $("browsePanel").scrollIntoView({ behavior: "smooth", block: "start" });
  browse();
});
fillBrowseOrders("");
