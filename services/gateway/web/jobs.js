/* Imports and re-embeds as they run; near-duplicate groups; the page started. */
"use strict";

// --- jobs: a row each, updated in place while they run ---

async function loadJobs(album) {
  try {
    const { body } = await api(`/v1/imports?album=${encodeURIComponent(album)}&limit=10`);
    if (album !== currentAlbum()) return;
    const rows = new Map([...$("jobs").querySelectorAll(".job")].map((row) => [row.dataset.id, row]));
    const listed = body.imports.map((job) => updateJobRow(rows.get(job.id) || jobRow(job.id), job));
    // A job this page started while the list was on its way is newer than all of it.
    const started = [...rows.values()].filter((row) => !listed.includes(row));
    $("jobs").replaceChildren(...started, ...listed);
    if (!started.length && !listed.length) $("jobs").replaceChildren(emptyState("No imports or re-embeds yet."));
    foldOlderJobs();
    schedulePoll();
  } catch (e) { showError($("jobsMsg"), e); }
}

/** Shows the job: its row updated, or a new row on top. */
function placeJob(job, fresh) {
  let row = $("jobs").querySelector(`.job[data-id="${job.id}"]`);
  if (!row) {
    $("jobs").querySelector(".empty")?.remove();
    row = jobRow(job.id);
    $("jobs").prepend(row);
  }
  if (fresh) {
    for (const other of $("jobs").querySelectorAll(".job.fresh")) other.classList.remove("fresh");
    row.classList.add("fresh");
  }
  updateJobRow(row, job);
  foldOlderJobs();
  schedulePoll();
}

function jobRow(id) {
  const row = el("div", "job");
  row.dataset.id = id;
  const head = el("div", "jobhead");
  head.append(el("span", "jobtitle"), el("span", "status badge"));
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.append(el("span", "ok"), el("span", "skip"), el("span", "fail"));
  const line = el("div", "jobline");
  line.append(el("span", "counts"), el("span", "speed"));
  const foot = el("div", "jobfoot");
  const toggle = el("button", "link show-failures");
  toggle.type = "button";
  toggle.addEventListener("click", () => toggleFailures(row));
  const cancel = el("button", "link cancel", "Cancel");
  cancel.type = "button";
  cancel.addEventListener("click", () => cancelJob(row, cancel));
  foot.append(el("span", "when"), toggle, cancel);
  const failures = el("div", "failures");
  failures.hidden = true;
  row.append(head, bar, line, foot, el("div", "msg"), failures);
  return row;
}

function updateJobRow(row, job) {
  const finished = FINISHED.has(job.status);
  const failedBefore = Number(row.dataset.failed || 0);
  row.dataset.status = job.status;
  row.dataset.failed = String(job.counts.failed);
  const title = row.querySelector(".jobtitle");
  const label = jobLabels.get(job.id) || job.source;  // what this page sent, or what the gateway recorded
  title.replaceChildren(JOB_TITLES[job.kind] || `${job.kind} job`);
  if (label) title.append(el("span", "sub", ` · ${label}`));
  title.title = `${title.textContent} (job ${job.id})`;
  const badge = row.querySelector(".status");
  badge.textContent = job.status;
  badge.className = `status badge ${job.status}`;
  updateBar(row.querySelector(".bar"), job, finished);
  row.querySelector(".counts").replaceChildren(...countParts(job));
  row.querySelector(".speed").textContent = speedText(job, finished);
  row.querySelector(".when").textContent = whenText(job);
  row.querySelector(".cancel").hidden = finished;
  const failures = row.querySelector(".failures");
  const toggle = row.querySelector(".show-failures");
  toggle.hidden = !job.counts.failed;
  toggle.textContent = failures.hidden ? `Show ${plural(job.counts.failed, "failure")}` : "Hide failures";
  if (!failures.hidden && job.counts.failed !== failedBefore) loadFailures(row);
  show(row.querySelector(".msg"), job.error || "", "error box");
  return row;
}

function updateBar(bar, job, finished) {
  const c = job.counts;
  const total = Math.max(job.total, job.processed);
  const share = (n) => total ? `${(100 * n / total).toFixed(2)}%` : "0%";
  // A job that ended with nothing to do is full when done, empty when it failed (nothing staged).
  const nothing = !total && finished;
  bar.querySelector(".ok").style.width = nothing ? (job.status === "done" ? "100%" : "0%") : share(c.added + c.duplicates + c.replaced);
  bar.querySelector(".skip").style.width = share(c.skipped);
  bar.querySelector(".fail").style.width = share(c.failed);
  bar.setAttribute("aria-valuemax", String(job.total));
  bar.setAttribute("aria-valuenow", String(job.processed));
  bar.setAttribute("aria-label", `${job.processed} of ${job.total} processed`);
}

/** "12 of 40 · 10 added · 2 failed": the outcomes that happened, the failures in red. */
function countParts(job) {
  const c = job.counts;
  if (!job.total && FINISHED.has(job.status)) return [el("b", null, job.status === "done" ? "no images" : "nothing imported")];
  const parts = [el("b", null, `${job.processed} of ${job.total}`)];
  const outcomes = [[c.added, job.kind === "reembed" ? "re-embedded" : "added"], [c.duplicates, "already there"],
                    [c.skipped, "skipped"], [c.replaced, "replaced"], [c.failed, "failed"]];
  for (const [n, word] of outcomes) {
    if (!n && word !== "added" && word !== "re-embedded") continue;
    parts.push(document.createTextNode(" · "));
    parts.push(el("span", word === "failed" ? "bad" : null, `${n} ${word}`));
  }
  return parts;
}

function speedText(job, finished) {
  const rate = job.rate ? `${job.rate < 10 ? job.rate.toFixed(1) : Math.round(job.rate)} images/s` : "";
  if (finished) {
    const took = job.started_at_ms && job.finished_at_ms ? `took ${formatDuration((job.finished_at_ms - job.started_at_ms) / 1000)}` : "";
    return [rate, took].filter(Boolean).join(" · ");
  }
  // A staging import's first batches may be added while the rest of its upload is staged.
  if (job.status === "staging") return rate ? `${rate} · the rest being staged…` : "staging the upload…";
  if (job.status === "queued") return "waiting for a worker…";
  if (job.processed >= job.total) return "finishing…";
  return [rate || "starting…", job.eta_s != null ? `about ${formatDuration(job.eta_s)} left` : ""].filter(Boolean).join(" · ");
}

function whenText(job) {
  if (job.finished_at_ms) return `${job.status === "cancelled" ? "cancelled" : "finished"} ${clockTime(job.finished_at_ms)}`;
  if (job.started_at_ms) return `started ${clockTime(job.started_at_ms)}`;
  return `created ${clockTime(job.created_at_ms)}`;
}

/** The latest SHOWN_JOBS jobs and every running one; the older ones behind a button. */
const SHOWN_JOBS = 3;
function foldOlderJobs() {
  const rows = [...$("jobs").querySelectorAll(".job")];
  rows.forEach((row, i) => row.classList.toggle("older", i >= SHOWN_JOBS && FINISHED.has(row.dataset.status)));
  const older = rows.filter((row) => row.classList.contains("older")).length;
  const all = $("jobs").classList.contains("all");
  $("moreJobs").hidden = !older;
  $("moreJobs").textContent = all ? "Show fewer" : `Show ${plural(older, "older job")}`;
}
$("moreJobs").addEventListener("click", () => { $("jobs").classList.toggle("all"); foldOlderJobs(); });

function schedulePoll() {
  const running = [...$("jobs").querySelectorAll(".job")].some((row) => !FINISHED.has(row.dataset.status));
  if (running && !jobPoll) jobPoll = setTimeout(pollJobs, 1000);
}

/** Every second while a job of the album runs: its progress; when one ends, the album's count and newest images. */
async function pollJobs() {
  const album = currentAlbum();
  const ids = [...$("jobs").querySelectorAll(".job")].filter((row) => !FINISHED.has(row.dataset.status)).map((row) => row.dataset.id);
  let ended = false;
  try {
    const jobs = await Promise.all(ids.map((id) => api(`/v1/imports/${id}`).then((answer) => answer.body)));
    if (album === currentAlbum()) {
      for (const job of jobs) { placeJob(job, false); ended = ended || FINISHED.has(job.status); }
      if ($("jobsMsg").classList.contains("error")) show($("jobsMsg"), "");
    }
  } catch (e) { showError($("jobsMsg"), e); }
  jobPoll = null;
  if (ended) await refreshAlbum(album);
  schedulePoll();
}

async function cancelJob(row, button) {
  button.disabled = true;
  try {
    const { body } = await api(`/v1/imports/${row.dataset.id}/cancel`, { method: "POST" });
    placeJob(body, false);
    await refreshAlbum(body.album);
  } catch (e) { showError($("jobsMsg"), e); }
  finally { button.disabled = false; }
}

async function toggleFailures(row) {
  const failures = row.querySelector(".failures");
  failures.hidden = !failures.hidden;
  row.querySelector(".show-failures").textContent = failures.hidden ? `Show ${plural(Number(row.dataset.failed), "failure")}` : "Hide failures";
  if (!failures.hidden) await loadFailures(row);
}

/** The job's failed items with their reasons: the first FAILURES_SHOWN, then a link to the next page as JSON. */
async function loadFailures(row) {
  const box = row.querySelector(".failures");
  const path = `/v1/imports/${row.dataset.id}/results?failed=true`;
  try {
    const { body } = await api(`${path}&limit=${FAILURES_SHOWN}`);
    box.replaceChildren(...body.results.map(failureNode));
    if (body.next_after != null) {
      const left = Number(row.dataset.failed) - body.results.length;
      const more = el("div", "muted", left > 0 ? `… and ${plural(left, "more failure")}: ` : "… and more: ");
      const link = el("a", null, "the next ones as JSON");
      link.href = `${path}&after=${body.next_after}`; link.target = "_blank"; link.rel = "noopener";
      more.appendChild(link);
      box.appendChild(more);
    }
  } catch (e) { box.replaceChildren(el("div", "msg error", e.message)); }
}

function failureNode(item) {
  const node = el("div", "failure");
  const head = el("div", "fhead");
  const name = el("span", "fname", item.name || item.url || `item ${item.index + 1}`);
  name.title = name.textContent;
  head.append(name, el("code", "reason", item.error ? item.error.reason : item.status));
  node.appendChild(head);
  if (item.error) node.appendChild(el("div", "why", item.error.message));
  if (item.file && item.file !== item.name) {  // named otherwise by its manifest row: which file it is
    const file = el("div", "src", `file ${item.file}`);
    file.title = item.file;
    node.appendChild(file);
  }
  if (item.url && !(item.error && item.error.message.includes(item.url))) {
    const src = el("div", "src", item.url);
    src.title = item.url;
    node.appendChild(src);
  }
  return node;
}

// --- re-embed ---

$("reembed").addEventListener("click", () => {
  const album = albums.get(currentAlbum());
  if (!album) return;
  $("reembedText").textContent = `Re-embed the ${plural(album.image_count, "image")} of "${album.name}" from their stored bytes `
    + "with the extractor's current model? Searches go on answering from the current vectors until the new ones take their place.";
  // What an album does not do yet can be turned on by the re-embed (it finds the faces or details of every image).
  $("reembedFacesLine").hidden = album.faces;
  $("reembedDetailsLine").hidden = album.details;
  $("reembedFaces").checked = $("reembedDetails").checked = false;
  $("reembedConfirm").hidden = false;
  $("reembedYes").focus();
});
$("reembedNo").addEventListener("click", () => { $("reembedConfirm").hidden = true; });
$("reembedYes").addEventListener("click", async () => {
  const album = currentAlbum();
  $("reembedYes").disabled = true;
  try {
    const options = new URLSearchParams({ faces: String($("reembedFaces").checked), details: String($("reembedDetails").checked) });
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/reembed?${options}`, { method: "POST" });
    $("reembedConfirm").hidden = true;
    show($("jobsMsg"), "");
    if (album === currentAlbum()) placeJob(body, true);
  } catch (e) { showError($("jobsMsg"), e); }
  finally { $("reembedYes").disabled = false; }
});

// --- near-duplicates: groups of the album's images within a distance of each other ----------------------

$("findDupes").addEventListener("click", () => findDuplicates());
$("dupeDistance").addEventListener("keydown", (e) => { if (e.key === "Enter") findDuplicates(); });

async function findDuplicates() {
  const album = currentAlbum();
  if (!album) return;
  const params = new URLSearchParams();
  if ($("dupeDistance").value.trim()) params.set("max_distance", $("dupeDistance").value.trim());
  $("findDupes").disabled = true;
  show($("dupesMsg"), "Looking for near-duplicates…");
  $("dupes").replaceChildren();
  try {
    const { body } = await api(`/v1/albums/${encodeURIComponent(album)}/duplicates?${params}`);
    if (album !== currentAlbum()) return;
    const images = body.groups.reduce((n, g) => n + g.images.length, 0);
    show($("dupesMsg"), body.groups.length
      ? `${plural(body.groups.length, "group")} of near-duplicates (${plural(images, "image")}) within distance ${body.max_distance}`
      : `No near-duplicates within distance ${body.max_distance}.`);
    $("dupes").replaceChildren(...body.groups.map((g) => {
      const group = el("div", "group");
      const strip = el("div", "strip");
      strip.append(...g.images.map(thumbLink));
      group.append(el("span", "hint", `${plural(g.images.length, "image")} · each within ${g.distance.toFixed(4)} of another`), strip);
      return group;
    }));
  } catch (e) { if (album === currentAlbum()) showError($("dupesMsg"), e); }
  finally { $("findDupes").disabled = !currentAlbum(); }
}

renderExamples();
loadAlbums();
