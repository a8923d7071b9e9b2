/* The album panel: newest images, and the import form. */
"use strict";

// --- album view: newest images, imports and re-embeds ------------------------------------------------

const NEWEST = 8;
const FAILURES_SHOWN = 50;
const FINISHED = new Set(["done", "failed", "cancelled"]);
const JOB_TITLES = { archive: "Archive import", urls: "URL import", manifest: "Manifest import", reembed: "Re-embed" };
// What the server takes from an archive: image files by suffix, hidden files and macOS' resource forks left out.
const IMAGE_SUFFIXES = [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"];
const jobLabels = new Map();  // job id -> what this page sent: "holiday.zip", "holiday/", "3 URLs"
let importSource = "archive";
let folder = null;
let jobPoll = null;
let viewAlbum = "";

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function formatDuration(seconds) {
  // Under 10 s to a tenth: a small import "took 0.4 s", not "0 s" beside its rate.
  if (seconds < 9.95) return `${Math.max(0, seconds).toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** "14:02" today, "3 May 14:02" another day. */
function clockTime(ms) {
  const d = new Date(ms);
  const time = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  return d.toDateString() === new Date().toDateString() ? time : `${d.getDate()} ${MONTHS[d.getMonth()]} ${time}`;
}

function showAlbumView(album) {
  const name = album ? album.name : "";
  $("albumNote").textContent = album ? `${name} · ${plural(album.image_count, "image")}` : "";
  $("reembed").disabled = $("deleteAlbum").disabled = $("findDupes").disabled = !album;
  $("startImport").disabled = !album || importing;
  if (name !== viewAlbum) {
    viewAlbum = name;
    $("reembedConfirm").hidden = $("deleteAlbumConfirm").hidden = true;
    show($("jobsMsg"), "");
    show($("dupesMsg"), "");
    $("dupes").replaceChildren();
    $("jobs").replaceChildren();
    $("jobs").classList.remove("all");
    foldOlderJobs();
    clearBrowse(name);
    noteUndeclared();
  }
  if (!album) {
    $("newest").replaceChildren(emptyState("Create or choose an album."));
    return;
  }
  loadNewest(name);
  loadJobs(name);
}

async function loadNewest(album) {
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/images?order_by=created_at&desc=true&limit=${NEWEST}`);
    if (album !== currentAlbum()) return;
    if (!body.images.length) $("newest").replaceChildren(emptyState("No images yet: add some, or import an archive, a folder or URLs."));
    else $("newest").replaceChildren(...body.images.map(thumbLink));
  } catch (e) { showError($("jobsMsg"), e); }
}

function thumbLink(image) {
  const link = el("a", "thumb");
  link.href = image.url; link.target = "_blank"; link.rel = "noopener"; link.title = image.name;
  link.dataset.imageId = image.id;
  link.dataset.album = albumOfImage(image);
  opensDetails(link, image);
  const img = el("img");
  img.src = image.thumbnail_url; img.alt = image.name; img.loading = "lazy";
  link.append(img, el("span", null, image.name.split("/").pop()));
  return link;
}

// --- the import form ---

function selectSource(source) {
  importSource = source;
  for (const tab of $("importPanel").querySelectorAll("[role=tab]")) {
    const on = tab.dataset.source === source;
    tab.setAttribute("aria-selected", String(on));
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
}

function setPicked(id, parts) {
  const box = $(id);
  box.replaceChildren(...parts.map((p, i) => i === 0 ? el("b", null, p) : document.createTextNode(" · " + p)));
  box.title = parts.join(" · ");
}

function isImagePath(path) {
  const parts = path.split("/");
  if (parts.some((p) => p.startsWith(".") || p === "__MACOSX")) return false;
  const lower = path.toLowerCase();
  return IMAGE_SUFFIXES.some((s) => lower.endsWith(s));
}

/** The chosen folder's image files, named by their path under the folder (what a manifest's file column names,
 *  as the CLI names them). */
function folderImages(files) {
  const all = [...files].map((file) => {
    const parts = (file.webkitRelativePath || file.name).split("/");
    return { root: parts.length > 1 ? parts[0] : "", path: parts.slice(parts.length > 1 ? 1 : 0).join("/"), file };
  });
  const entries = all.filter((e) => isImagePath(e.path)).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { root: all.length ? all[0].root || "folder" : "", entries, others: all.length - entries.length,
           bytes: entries.reduce((n, e) => n + e.file.size, 0) };
}

// A folder goes up as tar archives: an import job each (resumable, with progress, per-item results and cancel, like
// an archive), and tar is simple enough to write here: 512-byte headers before each file's bytes. The Blob only
// refers to the files, so nothing is read into memory before the upload streams it.
// A large folder goes in parts of at most UPLOAD_PART's images and bytes, as `imagesearch ingest` sends one: a
// gateway restarted mid-upload costs that part's upload again, not the whole folder's, and a part is sent while the
// one before it is embedded. A manifest goes cut by the gateway (POST /v1/albums/{album}/manifest-parts): each part
// with the rows its files take, found as its import finds them.
const UPLOAD_PART = { images: 1000, bytes: 512 * 1024 * 1024 };

/** The folder's entries in parts of at most UPLOAD_PART.images files and UPLOAD_PART.bytes (a larger file alone). */
function uploadParts(entries) {
  const parts = [];
  let size = 0;
  for (const entry of entries) {
    const last = parts[parts.length - 1];
    if (!last || last.length >= UPLOAD_PART.images || (last.length && size + entry.file.size > UPLOAD_PART.bytes)) {
      parts.push([]);
      size = 0;
    }
    parts[parts.length - 1].push(entry);
    size += entry.file.size;
  }
  return parts;
}

/** The parts the chosen folder goes up in. */
function folderParts() { return uploadParts(folder.entries); }
const TEXT = new TextEncoder();

function tarBlob(entries) {
  const parts = [];
  for (const { path, file } of entries) {
    const mtime = Math.floor((file.lastModified || Date.now()) / 1000);
    if (TEXT.encode(path).length > 100 || /[^\x20-\x7e]/.test(path)) {
      const record = paxRecord("path", path);  // a long or non-ASCII name: a pax header carries it in UTF-8
      parts.push(tarHeader("PaxHeader/" + asciiName(path, 90), record.length, mtime, "x"), record, tarPadding(record.length));
    }
    parts.push(tarHeader(asciiName(path, 100), file.size, mtime, "0"), file, tarPadding(file.size));
  }
  parts.push(new Uint8Array(1024));  // two zero blocks end the archive
  return new Blob(parts, { type: "application/x-tar" });
}

function asciiName(path, length) { return path.replace(/[^\x20-\x7e]/g, "_").slice(-length); }

function tarPadding(size) { return new Uint8Array((512 - (size % 512)) % 512); }

/** A pax record, "<length> <key>=<value>\n", its length counting its own digits. */
function paxRecord(key, value) {
  const body = TEXT.encode(` ${key}=${value}\n`);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return TEXT.encode(`${length} ${key}=${value}\n`);
}

/** A POSIX ustar header block. */
function tarHeader(name, size, mtime, type) {
  const block = new Uint8Array(512);
  const put = (offset, text) => block.set(TEXT.encode(text), offset);
  const octal = (n, width) => n.toString(8).padStart(width - 1, "0") + "\0";
  put(0, name);
  put(100, "0000644\0"); put(108, "0000000\0"); put(116, "0000000\0");
  put(124, octal(size, 12)); put(136, octal(mtime, 12));
  put(148, "        ");  // the checksum counts its own field as spaces
  put(156, type); put(257, "ustar\0"); put(263, "00");
  const sum = block.reduce((a, b) => a + b, 0);
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

/** POSTs a form with upload progress (fetch cannot report it), with these more headers; answers like api(). An
 *  abort of `signal` stops it: it rejects with stoppedError(). */
function postWithProgress(path, form, onProgress, headers = {}, signal = null) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(stoppedError());
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let body = xhr.responseText;
      if ((xhr.getResponseHeader("content-type") || "").includes("json")) {
        try { body = JSON.parse(body); } catch (e) { /* keep the text */ }
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve({ status: xhr.status, body });
      const error = apiError(xhr.status, body);
      error.dropped = DROPPED_STATUSES.includes(xhr.status);
      reject(error);
    };
    xhr.onerror = () => reject(Object.assign(new Error("The gateway cannot be reached."), { dropped: true }));
    xhr.onabort = () => reject(stoppedError());
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(form);
    onProgress(0, 0);  // the bar (and its Stop) shows before the first progress event
  });
}

// An upload the gateway dropped (it was restarted while it read or staged the archive: the connection refused or
// cut, or 502/503) is sent again once the gateway answers, for up to 10 minutes, as the CLI does; images the
// stopped gateway had added then count as duplicates. A refusal (the archive is bad, too large, ...) is not, nor a
// 504: a proxy that gave up waiting while the gateway may still be staging the upload (it would run twice).
const DROPPED_STATUSES = [502, 503];
const RESEND_FOR_MS = 10 * 60 * 1000;

/** postWithProgress, sent again while the gateway drops it; onWait(error, nextTryInMs) before each wait. Every try
 *  carries the same Idempotency-Key: a try after one the gateway queued (its answer lost) is answered with that
 *  import, not run again. */
async function postUntilTaken(path, form, onProgress, onWait) {
  const giveUpAt = Date.now() + RESEND_FOR_MS;
  const key = randomKey(), headers = { "Idempotency-Key": key };
  const stop = new AbortController();
  stopUpload = () => stop.abort();
  $("stopUpload").disabled = false;
  let wait = 1000;
  try {
    for (;;) {
      try { return await postWithProgress(path, form, onProgress, headers, stop.signal); }
      catch (error) {
        if (error.stopped) throw await cancelledByKey(path, key);
        if (!error.dropped || Date.now() + wait > giveUpAt) throw error;
        onWait(error, wait);
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, wait);
          stop.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
        });
        if (stop.signal.aborted) throw await cancelledByKey(path, key);
        wait = Math.min(wait * 2, 10_000);
      }
    }
  } finally { stopUpload = null; }
}

let stopUpload = null;  // stops the upload under way (its Stop button); null when none is

function stoppedError() { return Object.assign(new Error("You stopped the upload."), { stopped: true }); }

/** After the user stopped an upload to `path` (the album's imports): cancels by its key the import the gateway made
 *  of it, or makes later (it may have read the upload all before it stopped). The Error to show (`stopped`), with
 *  the import as it ended (`job`) if there was one. */
async function cancelledByKey(path, key) {
  const error = stoppedError();
  try {
    const { body } = await api(`${path}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" },
                                                   body: JSON.stringify({ idempotency_key: key }) });
    error.job = body.import;
    error.message = body.import
      ? `You stopped the upload after the gateway had taken it: its import is ${body.import.status}, `
        + `${plural(body.import.counts.added, "image")} of it added.`
      : "You stopped the upload before the gateway took it: nothing of it is imported.";
  } catch (e) {
    error.message = `You stopped the upload, and could not cancel it (${reasonOf(e)}): should the gateway have taken `
      + "it, cancel its import in the list.";
  }
  return error;
}

/** 128 random bits in hex (crypto.randomUUID needs a secure context; a gateway may be served over plain http). */
function randomKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function showUploadWaiting(error) {
  $("upload").hidden = false;
  $("upload").querySelector(".ok").style.width = "0%";
  $("uploadText").textContent = "Waiting for the gateway…";
  show($("importMsg"), `The upload did not get through (${reasonOf(error)}); it is sent again when the gateway answers.`);
}

/** The upload's bar; `part` ("part 2 of 5") when a folder goes up in parts. */
function showUpload(loaded, total, part) {
  $("upload").hidden = false;
  const done = total ? loaded / total : 0;
  $("upload").querySelector(".ok").style.width = `${(done * 100).toFixed(1)}%`;
  const what = part ? ` ${part}` : "";
  $("uploadText").textContent = !total ? `Uploading${what}…`
    : done < 1 ? `Uploading${what}… ${formatBytes(loaded)} of ${formatBytes(total)}`
    : `Uploaded${what}; the gateway is staging the images…`;
}

/** The import's form, and a label for its job; or a message saying what is missing. */
function importForm() {
  const form = new FormData();
  let label;
  if (importSource === "archive") {
    const file = $("importArchive").files[0];
    if (!file) return { missing: "Choose a .zip or .tar archive of images." };
    form.append("archive", file, file.name);
    label = file.name;
  } else if (importSource === "folder") {
    if (!folder) return { missing: "Choose a folder of images." };
    if (!folder.entries.length) return { missing: `The folder "${folder.root}" has no images.` };
    form.append("archive", tarBlob(folder.entries), `${folder.root}.tar`);
    label = `${folder.root}/`;
  } else {
    const urls = $("importUrls").value.split("\n").map((u) => u.trim()).filter(Boolean);
    if (!urls.length && !$("importManifest").files.length)
      return { missing: "Paste image URLs, one per line (or choose a manifest with a url column)." };
    form.append("urls", urls.join("\n"));
    label = urls.length ? plural(urls.length, "URL") : $("importManifest").files[0].name;
  }
  const manifest = $("importManifest").files[0];
  if (manifest) form.append("manifest", manifest, manifest.name);
  return { form: withImportOptions(form), label };
}

/** The form with the attributes given to all and what a near-duplicate does. */
function withImportOptions(form) {
  if ($("importAttrs").value.trim()) form.append("attributes", $("importAttrs").value.trim());
  form.append("on_duplicate", $("importOnDuplicate").value);
  return form;
}

let importing = false;  // an import is being sent: Start stays off until it is taken (or each part is sent)

async function startImport() {
  if (importing) return;
  const album = currentAlbum();
  if (!album) return show($("importMsg"), "Create or choose an album first.", "error");
  importing = $("startImport").disabled = true;
  try { await sendImport(album); }
  finally { importing = false; $("startImport").disabled = !currentAlbum(); }
}

async function sendImport(album) {
  if (importSource === "folder" && folder && folderParts().length > 1) return importInParts(album, folderParts());
  const { form, label, missing } = importForm();
  if (missing) return show($("importMsg"), missing, "error");
  show($("importMsg"), "");
  try {
    const { body } = await postUntilTaken(`/v1/albums/${encodeURIComponent(album)}/imports`, form, showUpload,
                                          showUploadWaiting);
    jobLabels.set(body.id, label);
    show($("importMsg"), `Import of ${label} started: ${plural(body.total, "image")} queued.`, "ok");
    clearImportForm();
    if (album === currentAlbum()) placeJob(body, true);
  } catch (e) {
    if (!e.stopped) return showError($("importMsg"), e);
    show($("importMsg"), `Import of ${label} stopped. ${e.message}`);
    if (e.job) { jobLabels.set(e.job.id, label); if (album === currentAlbum()) placeJob(e.job, true); }
  } finally { $("upload").hidden = true; }
}

let sendingParts = false;  // a folder's parts are being sent: leaving the page stops the rest

/** Sends the folder's parts one after another, an import each, each once the one before the last is done (one is
 *  embedded while the next is staged), as `imagesearch ingest` does. A part cancelled (its Cancel, the CLI) cancels
 *  the part sent after it and no more are sent; a failed one stops the sending; a part the gateway does not take
 *  leaves those sent to finish. */
async function importInParts(album, parts) {
  const root = folder.root, form = () => withImportOptions(new FormData());
  const path = `/v1/albums/${encodeURIComponent(album)}/imports`;
  const manifest = $("importManifest").files[0];
  const sent = [];
  let queued = 0, note = "", cancelled = false, stopped = false;
  sendingParts = true;
  show($("importMsg"), "");
  try {
    const manifests = manifest ? await manifestParts(album, manifest, parts) : [];
    for (let k = 0; k < parts.length; k++) {
      const part = `part ${k + 1} of ${parts.length}`;
      const body = form();
      body.append("archive", tarBlob(parts[k]), `${root}.tar (${part})`);
      if (manifest) body.append("manifest", new Blob([manifests[k]], { type: "text/plain" }), manifest.name);
      let job;
      try {
        ({ body: job } = await postUntilTaken(path, body, (loaded, total) => showUpload(loaded, total, part),
                                              showUploadWaiting));
      } catch (e) {
        if (e.stopped && e.job) {
          jobLabels.set(e.job.id, `${root}/ (${part})`);
          if (album === currentAlbum()) placeJob(e.job, true);
        }
        if (!sent.length && !e.stopped) throw e;  // nothing was sent: refused as one import is
        stopped = e.stopped;
        note = !stopped ? `${partsText(k + 1, parts.length)} not sent: ${reasonOf(e)}`
          : `at part ${k + 1} of ${parts.length}. ${e.message}`
            + (k + 1 < parts.length ? ` ${capitalised(partsText(k + 2, parts.length))} not sent.` : "");
        break;
      }
      sent.push(job.id);
      queued += job.total;
      jobLabels.set(job.id, `${root}/ (${part})`);
      if (k === 0) clearImportForm();
      if (album === currentAlbum()) placeJob(job, true);
      show($("importMsg"), `Importing ${root}/ in ${parts.length} parts, an import each: ${part} started, `
        + `${plural(queued, "image")} queued so far.`, "ok");
      $("upload").hidden = true;
      if (k + 1 === parts.length) break;
      let jobs;
      try { jobs = await partsRunning(sent, 1); }
      catch (e) {
        note = `${partsText(k + 2, parts.length)} not sent: ${reasonOf(e)}`;
        break;
      }
      const ended = jobs.find((j) => j.status === "failed" || j.status === "cancelled");
      if (ended) {
        cancelled = ended.status === "cancelled";
        if (cancelled)  // the user stopped the import: the part sent after it too
          for (const j of jobs.filter((j) => !FINISHED.has(j.status)))
            await api(`/v1/imports/${j.id}/cancel`, { method: "POST" }).catch(() => {});
        note = `${partsText(k + 2, parts.length)} not sent: part ${sent.indexOf(ended.id) + 1} ${ended.status}`;
        break;
      }
    }
    const again = "Choose the folder again to send the rest (its images already added count as duplicates).";
    const going = sent.length === 1 ? " The part sent goes on; cancel it in the list to stop it too."
      : sent.length ? ` The ${sent.length} parts sent go on; cancel them in the list to stop them too.` : "";
    if (stopped) show($("importMsg"), `Import of ${root}/ stopped ${note}${going}`);
    else if (note) show($("importMsg"), `Import of ${root}/ stopped: ${note}.${cancelled ? "" : ` ${again}`}`, "error");
    else show($("importMsg"), `Import of ${root}/ started in ${parts.length} parts: ${plural(queued, "image")} queued.`,
              "ok");
  } catch (e) { showError($("importMsg"), e); }
  finally { sendingParts = false; $("upload").hidden = true; }
}

/** The manifest cut by the gateway, one per part: each part's the rows its files take; the whole read by the
 *  album's columns first, so a bad cell refuses the import before any part is sent. */
async function manifestParts(album, manifest, parts) {
  show($("importMsg"), `Reading ${manifest.name}…`);
  const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/manifest-parts`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ manifest: await manifest.text(), manifest_name: manifest.name,
                           parts: parts.map((entries) => entries.map((e) => e.path)) }) });
  return body.manifests;
}

/** Why something did not get through, as a clause: the message without its closing stop, its first word in lower
 *  case unless it is an abbreviation ("the gateway cannot be reached", "HTTP 502"). */
function reasonOf(error) {
  const why = (error.detail || error.message).replace(/\.+$/, "");
  return /^[A-Z][a-z]/.test(why) ? why[0].toLowerCase() + why.slice(1) : why;
}

function capitalised(text) { return text[0].toUpperCase() + text.slice(1); }

/** Parts `first` to the last: "part 3 of 3", "parts 3-5 of 5". */
function partsText(first, count) {
  return first === count ? `part ${first} of ${count}` : `parts ${first}-${count} of ${count}`;
}

const partJobs = new Map();  // id -> the part's job as last read: a finished one is not asked again

/** The jobs `ids`, once at most `most` of them run (or one failed or was cancelled); those running asked again
 *  every second, and through a gateway's restart for up to RESEND_FOR_MS; any other error is thrown. */
async function partsRunning(ids, most) {
  let giveUpAt = Date.now() + RESEND_FOR_MS;
  for (;;) {
    try {
      const asked = ids.filter((id) => !FINISHED.has(partJobs.get(id)?.status));
      for (const { body } of await Promise.all(asked.map((id) => api(`/v1/imports/${id}`)))) partJobs.set(body.id, body);
      giveUpAt = Date.now() + RESEND_FOR_MS;
      const jobs = ids.map((id) => partJobs.get(id));
      if (jobs.some((j) => j.status === "failed" || j.status === "cancelled")
          || jobs.filter((j) => !FINISHED.has(j.status)).length <= most) return jobs;
    } catch (e) {
      if ((e.status && !DROPPED_STATUSES.includes(e.status)) || Date.now() > giveUpAt) throw e;
      show($("importMsg"), `The gateway ${e.status ? `answered HTTP ${e.status}` : "cannot be reached"}; the next part is `
        + "sent once it is back.");
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

window.addEventListener("beforeunload", (e) => {
  if (!sendingParts) return;
  e.preventDefault();
  e.returnValue = "";  // browsers before the standard's preventDefault
});

function clearImportForm() {
  $("importArchive").value = ""; $("importFolder").value = ""; $("importUrls").value = "";
  folder = null;
  setManifest(null);
  $("archivePicked").textContent = "a .zip or .tar (.tar.gz too); folders inside are fine";
  $("folderPicked").textContent = FOLDER_HINT;
}

function setManifest(file) {
  if (!file) {
    $("importManifest").value = "";
    $("manifestPicked").textContent = "a row per file or URL with its attributes";
  } else setPicked("manifestPicked", [file.name, formatBytes(file.size)]);
  $("clearManifest").hidden = !file;
  noteUndeclared();
}

// A manifest's columns that name the file, URL or name: not attributes; and what no column may be named.
const MANIFEST_KEYS = new Set(["file", "path", "url", "name"]);
const COLUMN_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const BUILT_IN = new Set(["id", "content_hash", "created_at", "attributes", "tags", "tag_scores"]);

/** Under a CSV manifest: its columns the album does not declare, whose cells (text) are stored as text, so that
 *  a filter such as price < 10 would compare them as text. JSONL values keep their JSON types. */
async function noteUndeclared() {
  const file = $("importManifest").files[0];
  const album = currentAlbum();
  $("manifestNote").hidden = true;
  if (!file || !album || !file.name.toLowerCase().endsWith(".csv")) return;
  let header;
  try { header = (await file.slice(0, 65536).text()).replace(/^\ufeff/, "").split(/\r?\n/, 1)[0]; }
  catch { return; }  // unreadable here: the gateway says what is wrong with it
  if ($("importManifest").files[0] !== file || currentAlbum() !== album) return;  // another chosen meanwhile
  const declared = new Set((albums.get(album) || { columns: [] }).columns.map((c) => c.name));
  // Only names a column may have: others stay attributes whatever the album declares.
  const names = header.split(",").map((n) => n.trim().replace(/^"(.*)"$/, "$1"))
    .filter((n) => COLUMN_NAME.test(n) && !MANIFEST_KEYS.has(n) && !BUILT_IN.has(n));
  const undeclared = names.filter((n) => !declared.has(n));
  if (!undeclared.length) return;
  $("manifestNote").textContent = `${album} declares no column ${undeclared.join(", ")}: those cells are stored as text, `
    + "which filters compare as text. An album created with them as typed columns stores them typed.";
  $("manifestNote").hidden = false;
}

for (const tab of $("importPanel").querySelectorAll("[role=tab]"))
  tab.addEventListener("click", () => selectSource(tab.dataset.source));
for (const button of $("importPanel").querySelectorAll("[data-pick]"))
  button.addEventListener("click", () => $(button.dataset.pick).click());
$("importArchive").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) setPicked("archivePicked", [file.name, formatBytes(file.size)]);
});
$("importFolder").addEventListener("change", (e) => {
  folder = e.target.files.length ? folderImages(e.target.files) : null;
  showFolderPicked();
});

const FOLDER_HINT = "its images, subfolders too, 1,000 an upload";

/** The chosen folder: its images, their size, the files left out and the parts it goes up in. */
function showFolderPicked() {
  if (!folder) return;
  const parts = [`${folder.root}/`, `${plural(folder.entries.length, "image")}, ${formatBytes(folder.bytes)}`];
  const count = folder.entries.length ? folderParts().length : 0;
  if (count > 1) parts.push(`sent in ${count} parts`);
  if (folder.others) parts.push(`${plural(folder.others, "other file")} left out`);
  setPicked("folderPicked", parts);
}
$("importManifest").addEventListener("change", (e) => setManifest(e.target.files[0]));
$("clearManifest").addEventListener("click", () => setManifest(null));
$("startImport").addEventListener("click", startImport);
$("stopUpload").addEventListener("click", () => {
  if (!stopUpload) return;
  $("stopUpload").disabled = true;
  $("uploadText").textContent = "Stopping the upload…";
  stopUpload();
});

