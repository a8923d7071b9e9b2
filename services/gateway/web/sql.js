/* The SQL panel: a statement, its query image, its answer as a table. */
"use strict";

// --- SQL ---------------------------------------------------------------------------------------------

function sqlString(text) { return "'" + String(text).replace(/'/g, "''") + "'"; }
function sqlName(name) { return /^[a-z_][a-z0-9_]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"'; }
function queryRef() { return `image(${sqlString(sqlFile ? sqlFile.name : "photo.jpg")})`; }

function examplesFor(album) {
  const examples = [];
  const columns = album ? album.columns : [];
  const table = sqlName(album ? album.name : "shoes");
  const shown = columns.slice(0, 2).map((c) => c.name);
  if (album) {
    examples.push(["nearest to the query image",
                   `SELECT ${["name", ...shown, "distance"].join(", ")} FROM ${table}\nORDER BY feature <=> ${queryRef()} LIMIT 12`]);
    const where = whereExample(columns);
    if (where) examples.push(["filtered nearest", `SELECT ${["name", ...shown, "distance"].join(", ")} FROM ${table}\n`
                                                  + `WHERE ${where}\nORDER BY feature <=> ${queryRef()} LIMIT 12`]);
    const sortable = columns.find((c) => ["float", "int", "timestamp"].includes(c.type));
    examples.push(sortable ? ["sorted by " + sortable.name, `SELECT * FROM ${table} ORDER BY ${sortable.name} DESC LIMIT 20`]
                           : ["list images", `SELECT * FROM ${table} LIMIT 20`]);
    examples.push(["count", `SELECT count(*) FROM ${table}`]);
    const groupable = columns.find((c) => c.type === "string" || c.type === "bool");
    if (groupable)
      examples.push([`count by ${groupable.name}`, `SELECT ${groupable.name}, count(*) FROM ${table} GROUP BY ${groupable.name}`]);
    if (columns.length) {
      const c = columns[0];
      examples.push(["update one image",
                     `UPDATE ${table} SET ${c.name} = ${SQL_SAMPLES[c.type]} WHERE name = ${sqlString(sampleImageName || "photo.jpg")}`]);
    }
  }
  examples.push(["create an album", "CREATE TABLE shoes (price DOUBLE, colour VARCHAR, sizes VARCHAR[], in_stock BOOLEAN, listed_at TIMESTAMP)"]);
  return examples;
}

/** The SQL examples of the chosen album. Buttons of the same labels are kept and given their new statements (the
 * album's sample image name comes a moment after the album): a click under way then lands on the button it aimed
 * at, not on one being replaced. */
function renderExamples() {
  const box = $("sqlExamples");
  const examples = examplesFor(albums.get(currentAlbum()));
  const buttons = [...box.querySelectorAll("button")];
  if (buttons.length !== examples.length || buttons.some((b, i) => b.textContent !== examples[i][0])) {
    box.replaceChildren(el("span", "muted", "Examples:"), ...examples.map(([label]) => {
      const button = el("button", null, label);
      button.type = "button";
      return button;
    }));
  }
  box.querySelectorAll("button").forEach((button, i) => {
    button.title = examples[i][1];
    button.dataset.statement = examples[i][1];
  });
}

function setSqlFile(file) {
  sqlFile = file || null;
  $("sqlFileInfo").classList.toggle("on", !!sqlFile);
  if (sqlFile) {
    $("sqlThumb").src = URL.createObjectURL(sqlFile);
    $("sqlImageRef").textContent = queryRef();
    $("sqlFileInfo").title = `${sqlFile.name}: name it in the statement as ${queryRef()}`;
  } else $("sqlFile").value = "";
  $("sqlPick").textContent = sqlFile ? "Change image…" : "Query image…";
  renderExamples();
}

function insertAtCursor(area, text) {
  const start = area.selectionStart, end = area.selectionEnd;
  area.setRangeText(text, start, end, "end");
  area.focus();
}

$("sqlPick").addEventListener("click", () => $("sqlFile").click());
$("sqlFile").addEventListener("change", (e) => setSqlFile(e.target.files[0]));
$("sqlClearFile").addEventListener("click", () => setSqlFile(null));
$("sqlInsertRef").addEventListener("click", () => insertAtCursor($("sql"), queryRef()));
$("runSql").addEventListener("click", () => runSql());
$("sqlExamples").addEventListener("click", (e) => {
  const button = e.target.closest("button");
  if (button && button.dataset.statement) { $("sql").value = button.dataset.statement; $("sql").focus(); }
});
$("sql").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(); }
});

const CHANGE_WORDS = { create_table: "created", drop_table: "dropped", insert: "inserted", update: "updated", delete: "deleted" };

async function runSql() {
  const statement = $("sql").value.trim();
  if (!statement) return show($("sqlMsg"), "Write a statement, or click an example.", "error");
  const form = new FormData();
  form.append("statement", statement);
  if (sqlFile) form.append("file", sqlFile, sqlFile.name);
  $("runSql").disabled = true;
  show($("sqlMsg"), "Running…");
  $("sqlOut").replaceChildren();
  try {
    const { body } = await api("/v1/sql", { method: "POST", body: form });
    if (body.statement === "select") showRows(body);
    else {
      show($("sqlMsg"), changeMessage(body), "ok box");
      await loadAlbums(body.statement === "create_table" ? body.album : undefined);
    }
  } catch (e) { showSqlError(e, statement); }
  finally { $("runSql").disabled = false; }
}

function changeMessage(body) {
  const n = body.affected ?? 0;
  const took = `${body.took_ms.toFixed(1)} ms`;
  if (body.statement === "create_table")
    return n ? `Album "${body.album}" created · ${took}` : `Album "${body.album}" already exists · ${took}`;
  if (body.statement === "drop_table")
    return n ? `Album "${body.album}" dropped · ${took}` : `No album "${body.album}" to drop · ${took}`;
  return `${n} image${n === 1 ? "" : "s"} ${CHANGE_WORDS[body.statement] || "changed"} in "${body.album}" · ${took}`;
}

function showRows(body) {
  const n = body.rows.length;
  show($("sqlMsg"), `${n} row${n === 1 ? "" : "s"} · ${body.took_ms.toFixed(1)} ms`);
  const types = columnTypes(body.album);
  if (!n) return $("sqlOut").replaceChildren(emptyState("No rows."));
  if (body.rows.some((r) => r.image)) {
    const grid = el("div", "grid");
    for (const row of body.rows) {
      const pairs = body.columns.map((c, i) => [c, row.values[i], types[c]]).filter(([c]) => c !== "name");
      grid.appendChild(row.image ? imageCard(row.image, [pairs]) : emptyState("(no image)"));
    }
    $("sqlOut").replaceChildren(grid);
  } else $("sqlOut").replaceChildren(rowsTable(body.columns, body.rows, types));
}

function rowsTable(columns, rows, types) {
  const numeric = columns.map((_, i) => rows.every((r) => r.values[i] === null || typeof r.values[i] === "number"));
  const table = el("table");
  const head = el("tr");
  columns.forEach((c, i) => head.appendChild(el("th", numeric[i] ? "num" : null, c)));
  table.appendChild(el("thead")).appendChild(head);
  const tbody = table.appendChild(el("tbody"));
  for (const row of rows) {
    const tr = tbody.appendChild(el("tr"));
    columns.forEach((c, i) => tr.appendChild(el("td", numeric[i] ? "num" : null)).appendChild(valueNode(row.values[i], types[c], c)));
  }
  const wrap = el("div", "table-wrap");
  wrap.appendChild(table);
  return wrap;
}

/** The server's message; for a syntax error, the statement's line with a caret under the position. */
function showSqlError(error, statement) {
  show($("sqlMsg"), error.detail || error.message, "error box");
  const match = /at position (\d+)(?: near '((?:[^'\\]|\\.)*)')?/.exec(error.detail || "");
  if (match) showCaret(statement, Number(match[1]), (match[2] || "").length);
  if (error.meta) $("sqlMsg").appendChild(el("div", "meta", error.meta));
}

function showCaret(statement, position, length) {
  const at = Math.min(Math.max(position - 1, 0), statement.length);
  const lineStart = statement.lastIndexOf("\n", at - 1) + 1;
  const lineEnd = statement.indexOf("\n", at) === -1 ? statement.length : statement.indexOf("\n", at);
  const width = Math.max(1, Math.min(length, lineEnd - at));
  const caret = el("div", "caret", statement.slice(lineStart, lineEnd) + "\n" + " ".repeat(at - lineStart));
  caret.appendChild(el("b", null, "^".repeat(width)));
  $("sqlMsg").appendChild(caret);
  const lead = $("sql").value.length - $("sql").value.trimStart().length;
  $("sql").setSelectionRange(lead + at, lead + at + width);
}

