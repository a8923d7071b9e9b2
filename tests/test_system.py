"""The system as a user runs it: the command line, and a restart that keeps every album."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from services.devstack import ROOT, Stack


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGESEARCH_URL": stack.http_url}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_ingests_a_folder_and_finds_a_photo_first(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    album = f"cli-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for i, photo in enumerate(photos[:5]):
        (folder / ("sub" if i % 2 else "") / photo.name).write_bytes(photo.read_bytes())
    (folder / "notes.txt").write_text("not an image, not picked up")

    ingest = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", '{"source": "cli"}')
    assert ingest.returncode == 0, ingest.stderr
    assert "5 added" in ingest.stdout

    again = _cli(stack, "ingest", str(folder), "--album", album)
    assert "5 duplicate" in again.stdout

    search = _cli(stack, "search", str(photos[2]), "--album", album, "--top-k", "3")
    assert search.returncode == 0, search.stderr
    first = search.stdout.splitlines()[1].split()  # rank, distance, verified matches, name, url, attributes
    assert first[3] == photos[2].name
    assert float(first[1]) < 0.01 and int(first[2]) >= 100

    # Listed a page at a time, by id or by a column.
    page1 = _cli(stack, "images", "--album", album, "--limit", "3")
    ids = [line.split()[0] for line in page1.stdout.splitlines()]
    assert len(ids) == 3 and page1.stderr.strip().endswith(f"more: --after {ids[-1]}")
    rest = _cli(stack, "images", "--album", album, "--limit", "3", "--after", ids[-1])
    ids += [line.split()[0] for line in rest.stdout.splitlines()]
    assert len(ids) == len(set(ids)) == 5 and ids == sorted(ids) and "more:" not in rest.stderr
    as_json = [json.loads(line) for line in _cli(stack, "images", "--album", album, "--json").stdout.splitlines()]
    assert [i["id"] for i in as_json] == ids and all(i["attributes"]["source"] == "cli" for i in as_json)
    past = _cli(stack, "images", "--album", album, "--after", ids[-1])
    assert past.stdout == "" and f"no more images in album {album}" in past.stderr
    by_name = _cli(stack, "images", "--album", album, "--order-by", "name", "--desc", "--limit", "2")
    names = [line.split()[1] for line in by_name.stdout.splitlines()]
    stored = [("sub/" if i % 2 else "") + p.name for i, p in enumerate(photos[:5])]  # named by path in the folder
    assert names == sorted(stored, reverse=True)[:2], by_name.stdout + by_name.stderr
    assert by_name.stderr.strip().endswith("more: --offset 2")

    # An image of the album as the query, by its id: the others nearest to it.
    listed = _cli(stack, "images", "--album", album).stdout.splitlines()
    image_id = next(line.split()[0] for line in listed if photos[2].name in line)
    by_id = _cli(stack, "search", "--image-id", image_id, "--album", album, "--top-k", "3")
    assert by_id.returncode == 0, by_id.stderr
    names = [line.split()[3] for line in by_id.stdout.splitlines()[1:]]
    assert len(names) == 3 and photos[2].name not in names
    for args in ([], [str(photos[2]), "--image-id", image_id]):
        neither = _cli(stack, "search", *args, "--album", album)
        assert neither.returncode == 2 and "give a query image (a file or URL) or --image-id" in neither.stderr


def test_cli_reports_a_corrupt_file_and_keeps_the_rest(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    album = f"cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / photos[0].name).write_bytes(photos[0].read_bytes())
    result = _cli(stack, "ingest", str(tmp_path), "--album", album)
    assert result.returncode == 1
    assert "broken.jpg" in result.stdout + result.stderr
    assert "1 added" in result.stdout
    (listed,) = _cli(stack, "imports", "--album", album).stdout.splitlines()
    job_id = listed.split()[0]
    assert listed.endswith(f"{tmp_path.name}.tar")  # the folder sent, packed in a tar named by it
    listed = _cli(stack, "import-results", job_id)
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["status"] for line in listed.stdout.splitlines()) == ["added", "failed"]
    failed = [json.loads(line) for line in _cli(stack, "import-results", job_id, "--failed").stdout.splitlines()]
    assert [(f["name"], f["error"]["reason"]) for f in failed] == [("broken.jpg", "invalid_image")]


def test_the_command_reads_the_paths_it_is_given_from_the_caller_s_folder(
        stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    """`./imagesearch` run from elsewhere: relative paths name files there, not in the project's folder; a path
    that is not there, or a folder without images, is said so before any album is made."""
    album = f"cwd_{uuid.uuid4().hex[:8]}"
    (tmp_path / "pics").mkdir()
    for photo in photos[:3]:
        (tmp_path / "pics" / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "services").mkdir()  # a package of the caller's own named as ours is not what the tool imports
    (tmp_path / "services" / "__init__.py").write_text("raise SystemExit('the caller folder was imported')\n")
    (tmp_path / "pics.csv").write_text("file,note\n" + "".join(f"{p.name},from {p.stem}\n" for p in photos[:3]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "imagesearch"), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "IMAGESEARCH_URL": stack.http_url})

    for path, said in [("nothere", "no such file or folder: nothere"), ("empty", "no image file")]:
        refused = run("ingest", path, "--album", album)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    assert httpx.get(f"{stack.http_url}/v1/albums/{album}").status_code == 404  # no album made by a typo
    refused = run("ingest", "pics", "--album", album, "--attributes", "nothere.csv")
    assert refused.returncode == 2 and "no such file or folder: nothere.csv" in refused.stderr, refused.stderr

    ingest = run("ingest", "pics", "--album", album, "--attributes", "pics.csv",
                 "--attributes", '{"source": "cwd", "note": "overridden by each row"}')
    assert ingest.returncode == 0 and "3 added" in ingest.stdout, ingest.stdout + ingest.stderr
    assert f"created album {album}" in ingest.stderr
    search = run("search", f"pics/{photos[1].name}", "--album", album, "--top-k", "1")
    assert search.returncode == 0 and photos[1].name in search.stdout.splitlines()[1], search.stdout + search.stderr
    nearest = run("sql", f"SELECT name, note, source FROM {album} ORDER BY feature <-> "
                         f"image('pics/{photos[2].name}') LIMIT 1", "--json")
    assert nearest.returncode == 0, nearest.stderr
    assert json.loads(nearest.stdout)["rows"][0]["values"] == [photos[2].name, f"from {photos[2].stem}", "cwd"]


def test_cli_shows_changes_and_deletes_images(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    """One image shown (its bytes saved), images changed by id or by a filter with values read as the columns'
    types, and deleted the same two ways; what cannot be done is said, and changes nothing."""
    album = f"edit_{uuid.uuid4().hex[:8]}"
    made = _cli(stack, "create-album", album, "--column", "price:float", "--column", "in_stock:bool",
                "--column", "sizes:string_list")
    assert made.returncode == 0, made.stderr
    (tmp_path / "pics").mkdir()
    for photo in photos[:4]:
        (tmp_path / "pics" / photo.name).write_bytes(photo.read_bytes())
    assert _cli(stack, "ingest", str(tmp_path / "pics"), "--album", album, "--attributes",
                '{"colour": "red", "price": 10}').returncode == 0
    listed = dict(line.split()[1::-1] for line in _cli(stack, "images", "--album", album).stdout.splitlines())
    first, second = listed[photos[0].name], listed[photos[1].name]

    shown = _cli(stack, "image", first, "--album", album, "--save", str(tmp_path / "saved"))
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if not line.startswith((" ", "content", "attributes"))]
    facts = dict(line.split(maxsplit=1) for line in lines)
    assert (facts["id"], facts["name"], facts["album"]) == (first, photos[0].name, album)
    assert "  price                10.0" in shown.stdout and '  colour               "red"' in shown.stdout
    assert (tmp_path / "saved").read_bytes() == photos[0].read_bytes()
    assert json.loads(_cli(stack, "image", first, "--album", album, "--json").stdout)["attributes"]["price"] == 10.0

    # By id: each value read as its column's type (undeclared: text); the name too, for one image.
    changed = _cli(stack, "update-images", first, "--album", album, "--set", "price=42.5", "--set", "in_stock=yes",
                   "--set", "sizes=38|39", "--set", "note=007", "--unset", "colour", "--name", "renamed.png")
    assert changed.returncode == 0, changed.stderr
    got = httpx.get(f"{stack.http_url}/v1/albums/{album}/images/{first}").json()
    assert got["name"] == "renamed.png"
    assert {k: got["attributes"].get(k) for k in ("price", "in_stock", "sizes", "note", "colour")} == {
        "price": 42.5, "in_stock": True, "sizes": ["38", "39"], "note": "007", "colour": None}
    # Tags set by hand are a list, found by `images --tag` as the network's labels are.
    tagged = _cli(stack, "update-images", second, "--album", album, "--set", "tags=sale|new arrival")
    assert tagged.returncode == 0, tagged.stderr
    found = _cli(stack, "images", "--album", album, "--tag", "new arrival")
    assert [line.split()[0] for line in found.stdout.splitlines()] == [second], found.stdout + found.stderr
    hand = httpx.get(f"{stack.http_url}/v1/albums/{album}/images/{second}").json()["attributes"]
    assert (hand["tags"], hand.get("tag_scores")) == (["sale", "new arrival"], None)  # the network's scores went
    # Ordered by a column, its value shown: the dearest first, the image without a price last when asked (SQL's
    # default puts it first descending).
    assert _cli(stack, "update-images", second, "--album", album, "--unset", "price").returncode == 0
    dearest = _cli(stack, "images", "--album", album, "--order-by", "price", "--desc", "--nulls", "last")
    assert [line.split()[:3:2] for line in dearest.stdout.splitlines()][::3] == [[first, "price=42.5"],
                                                                                [second, "price=NULL"]], dearest.stdout
    default = httpx.get(f"{stack.http_url}/v1/albums/{album}/images", params={"order_by": "price", "desc": True})
    assert default.json()["images"][0]["id"] == second
    assert _cli(stack, "update-images", second, "--album", album, "--set", "price=10").returncode == 0
    # By a filter, and every image.
    by_filter = _cli(stack, "update-images", "--album", album, "--where", "price > 40", "--set", "colour=blue")
    assert by_filter.returncode == 0 and f"album {album}: 1 image(s) updated" in by_filter.stdout, by_filter.stderr
    assert _cli(stack, "update-images", "--album", album, "--all", "--set", "in_stock=false").stdout.strip() == \
        f"album {album}: 4 image(s) updated"
    # Counted, all or by a filter, and grouped by columns, the largest group first.
    assert _cli(stack, "count", "--album", album).stdout.strip() == "4"
    assert _cli(stack, "count", "--album", album, "--where", "price > 40").stdout.strip() == "1"
    grouped = _cli(stack, "count", "--album", album, "--by", "price", "--by", "in_stock")
    assert grouped.stdout.splitlines() == ["price  in_stock  count", "-----  --------  -----", "10.0   false     3",
                                           "42.5   false     1"]
    assert json.loads(_cli(stack, "count", "--album", album, "--by", "price", "--json").stdout)["groups"] == [
        {"key": [10.0], "count": 3}, {"key": [42.5], "count": 1}]
    undeclared = _cli(stack, "count", "--album", album, "--by", "colour")
    assert undeclared.returncode == 2 and "colour" in undeclared.stderr, undeclared.stderr

    # Refused, with nothing changed: a value not of its column's type, no images named, two names at once.
    for args, said in [([first, "--set", "price=cheap"], "price is a float column and 'cheap' is not one"),
                       (["--set", "price=1"], "name the images: their ids, --where FILTER, or --all"),
                       ([first, "--where", "price > 1", "--set", "price=1"], "name the images"),
                       ([first, second, "--name", "x"], "--name renames one image"),
                       ([first], "nothing to change"),
                       ([first, "--set", "price"], "--set takes NAME=VALUE"),
                       (["--all", "--set", "name=x"], "an image's name is not an attribute: --name renames one"),
                       ([first, "--set", "price=nan"], "price is a float column and 'nan' is not one (not a finite"),
                       ([first, "--set", "price=1", "--unset", "price"], "price is both set and unset")]:
        refused = _cli(stack, "update-images", *args, "--album", album)
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr)
    assert httpx.get(f"{stack.http_url}/v1/albums/{album}/images/{first}").json()["attributes"]["price"] == 42.5
    no_faces = _cli(stack, "image", first, "--album", album, "--faces")
    assert no_faces.returncode == 2 and "409" in no_faces.stderr and "faces" in no_faces.stderr

    # Deleted by id (one the album lacks said, the others deleted) and by a filter.
    missing = first[:-1] + ("0" if first[-1] != "0" else "1")
    deleted = _cli(stack, "delete-images", first, missing, "--album", album)
    assert deleted.returncode == 1 and f"album {album}: 1 image(s) deleted, 1 not found" in deleted.stdout
    assert f"error: no image {missing} in album '{album}'" in deleted.stderr
    gone = _cli(stack, "update-images", first, "--album", album, "--set", "price=1")  # none found: 2
    assert gone.returncode == 2 and f"album {album}: 0 image(s) updated, 1 not found" in gone.stdout, gone.stderr
    for command in (["delete-images"], ["update-images", "--set", "price=1"]):  # no such album: said once
        typo = _cli(stack, *command, second, missing, "--album", f"{album}x")
        assert typo.returncode == 2 and typo.stderr.count("404 album_not_found") == 1, typo.stderr
    assert httpx.get(f"{stack.http_url}/v1/albums/{album}/images/{first}").status_code == 404
    assert _cli(stack, "delete-images", "--album", album).returncode == 2  # nothing named: nothing deleted
    by_where = _cli(stack, "delete-images", "--album", album, "--where", f"name = '{photos[1].name}'")
    assert by_where.stdout.strip() == f"album {album}: 1 image(s) deleted", by_where.stderr
    assert httpx.get(f"{stack.http_url}/v1/albums/{album}/images/count").json()["count"] == 2


def test_cli_ingest_of_a_csv_manifest_into_a_new_album_declares_its_columns(stack: Stack, photos: list[Path],
                                                                           tmp_path: Path) -> None:
    """The album `ingest` makes for a CSV manifest declares its columns, typed as all their cells read (so that a
    filter compares prices as numbers); into an album that exists without them, a note says they stay text."""
    folder = tmp_path / "shop"
    folder.mkdir()
    for name, photo in zip("abc", photos, strict=False):
        (folder / f"{name}.png").write_bytes(photo.read_bytes())
    (tmp_path / "shop.csv").write_text("file,price,in_stock,sizes,listed_at,colour\n"
                                       "a.png,8.25,true,41|42,2024-03-01,red\n"
                                       "b.png,12,no,42,,blue\n"
                                       "c.png,5,yes,,2023-01-01T10:00:00Z,\n")
    album = f"guess_{uuid.uuid4().hex[:8]}"
    ingest = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", str(tmp_path / "shop.csv"))
    assert ingest.returncode == 0 and "3 added" in ingest.stdout, ingest.stdout + ingest.stderr
    assert f"created album {album} with columns price:float in_stock:bool sizes:string_list listed_at:timestamp " \
           "colour:string (the types the cells of shop.csv read as" in ingest.stderr, ingest.stderr
    declared = httpx.get(f"{stack.http_url}/v1/albums/{album}").json()["columns"]
    assert [(c["name"], c["type"]) for c in declared] == [("price", "float"), ("in_stock", "bool"),
                                                          ("sizes", "string_list"), ("listed_at", "timestamp"),
                                                          ("colour", "string")]
    assert _cli(stack, "count", "--album", album, "--where", "price < 10 and in_stock").stdout.strip() == "2"

    plain = f"plain_{uuid.uuid4().hex[:8]}"
    assert _cli(stack, "create-album", plain).returncode == 0
    noted = _cli(stack, "ingest", str(folder), "--album", plain, "--attributes", str(tmp_path / "shop.csv"))
    assert noted.returncode == 0 and f"note: album {plain} declares no column price, in_stock, sizes, listed_at, " \
           "colour: those cells are stored as text" in noted.stderr, noted.stderr


def test_cli_sends_many_files_in_parts_an_import_each_with_their_manifest_rows(stack: Stack, photos: list[Path],
                                                                                tmp_path: Path) -> None:
    """Seven photos in parts of three: three imports (listed as parts), each with the manifest's rows of its files
    (a row naming a folder's file as `sub/x.png` finds it in whichever part it goes), the row naming no file sent
    reported once, and one summary; a bad cell anywhere in the manifest refuses the ingest before any part is sent."""
    folder = tmp_path / "shop"
    (folder / "sub").mkdir(parents=True)
    for n, photo in enumerate(photos[:7]):
        (folder / ("sub" if n % 2 else "") / f"p{n}.png").write_bytes(photo.read_bytes())
    rows = [f"{'sub/' if n % 2 else ''}p{n}.png,{n + 0.5},{'true' if n < 4 else 'false'}" for n in range(7)]
    (tmp_path / "shop.csv").write_text("\n".join(["file,price,in_stock", *rows, "gone.png,1,true"]) + "\n")
    album = f"parts_{uuid.uuid4().hex[:8]}"
    ingest = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", str(tmp_path / "shop.csv"),
                  "--images-per-upload", "3", "--quiet")
    assert ingest.returncode == 1, ingest.stdout + ingest.stderr  # the row naming no file failed
    assert "sending 7 image file(s) in 3 parts of up to 3, an import each" in ingest.stderr, ingest.stderr
    assert ingest.stdout.splitlines() == [
        "failed gone.png: file_not_found: the manifest names it, but the import has no such file",
        f"album {album}: 7 added, 1 failed"]
    jobs = httpx.get(f"{stack.http_url}/v1/imports", params={"album": album}).json()["imports"]
    assert sorted((j["source"], j["status"], j["total"]) for j in jobs) == [
        ("shop.tar (part 1 of 3) + shop.csv", "done", 3), ("shop.tar (part 2 of 3) + shop.csv", "done", 3),
        ("shop.tar (part 3 of 3) + shop.csv", "done", 2)]
    assert _cli(stack, "count", "--album", album, "--by", "in_stock").stdout.splitlines()[2:] == \
        ["true      4", "false     3"]
    assert _cli(stack, "count", "--album", album, "--where", "price > 5").stdout.strip() == "2"

    (tmp_path / "bad.csv").write_text("\n".join(["file,price", "p0.png,1", "p6.png,cheap"]) + "\n")
    refused = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", str(tmp_path / "bad.csv"),
                   "--images-per-upload", "3", "--quiet")
    assert refused.returncode == 2 and "bad.csv: line 3: price" in refused.stderr, refused.stderr
    assert len(httpx.get(f"{stack.http_url}/v1/imports", params={"album": album}).json()["imports"]) == 3


def test_cli_search_of_an_unknown_album_says_so(stack: Stack, photos: list[Path]) -> None:
    result = _cli(stack, "search", str(photos[0]), "--album", "no-such-album")
    assert result.returncode == 2
    assert "album_not_found" in result.stderr


def test_the_sql_session_of_the_readme_on_real_photos(stack: Stack, photos: list[Path], tmp_path: Path) -> None:
    album = f"shoes_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "shoes"
    folder.mkdir()
    names = [f"{c}.png" for c in "abcde"]
    for name, photo in zip(names, photos, strict=False):
        (folder / name).write_bytes(photo.read_bytes())
    (tmp_path / "shoes.csv").write_text(
        "file,price,colour,sizes,in_stock,listed_at\n"
        "a.png,39,red,41|42,true,2024-03-01\n"
        "b.png,45.5,blue,42,yes,2023-06-01\n"
        "c.png,80,red,43,true,2024-05-01\n"
        "d.png,20,green,,false,2023-01-01\n"
        "e.png,30,red,44,true,\n")
    created = _cli(stack, "sql", f"CREATE TABLE {album} (price DOUBLE, colour VARCHAR, sizes VARCHAR[], "
                                 "in_stock BOOLEAN, listed_at TIMESTAMP)")
    assert created.returncode == 0, created.stderr
    ingest = _cli(stack, "ingest", str(folder), "--album", album, "--attributes", str(tmp_path / "shoes.csv"))
    assert ingest.returncode == 0 and "5 added" in ingest.stdout, ingest.stdout + ingest.stderr

    query = tmp_path / "query.png"
    query.write_bytes(photos[0].read_bytes())
    nearest = _cli(stack, "sql", f"SELECT name, price, distance FROM {album} WHERE price < 50 AND colour IN "
                                 f"('red', 'blue') AND in_stock ORDER BY feature <-> image('{query}') LIMIT 10")
    assert nearest.returncode == 0, nearest.stderr
    lines = nearest.stdout.splitlines()
    assert lines[0].split() == ["name", "price", "distance", "image"]  # each row ends with the image's link
    rows = [line.split() for line in lines[2:-1]]
    assert rows[0][0] == "a.png" and sorted(r[0] for r in rows) == ["a.png", "b.png", "e.png"]
    assert float(rows[0][2]) < 0.01 and "3 row(s)" in lines[-1]

    updated = _cli(stack, "sql", f"UPDATE {album} SET price = 39.5 WHERE name = 'a.png'")
    assert "1 affected" in updated.stdout, updated.stdout + updated.stderr
    deleted = _cli(stack, "sql", f"DELETE FROM {album} WHERE listed_at < TIMESTAMP '2024-01-01'")
    assert "2 affected" in deleted.stdout, deleted.stdout + deleted.stderr
    listed = _cli(stack, "sql", f"SELECT name, price FROM {album} ORDER BY name", "--json")
    assert [r["values"] for r in json.loads(listed.stdout)["rows"]] == [["a.png", 39.5], ["c.png", 80.0],
                                                                        ["e.png", 30.0]]
    refused = _cli(stack, "sql", f"DELETE FROM {album}")
    assert refused.returncode == 2 and "explicitly" in refused.stderr
    bad = _cli(stack, "sql", f"SELECT * FROM {album} WHERE price < 'cheap'")
    assert bad.returncode == 2 and "float column" in bad.stderr


def test_after_a_restart_of_everything_ready_means_ready(stack: Stack, photos: list[Path]) -> None:
    """Albums and images survive a restart, and once the stack says it is ready (the search service serves
    only when Milvus has replayed its log) the first calls answer at once and in full."""
    album = f"restart-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        client.post("/v1/albums", json={"name": album})
        files = [("file", (p.name, p.read_bytes())) for p in photos[:4]]
        assert client.post(f"/v1/albums/{album}/images", files=files).status_code == 201
    stack.stop()
    stack.ensure(("milvus", "s3", "redis", "extractor", "search", "gateway"))
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        assert client.get("/readyz").status_code == 200
        started = time.monotonic()
        listed = client.get("/v1/albums")
        assert listed.status_code == 200, listed.text
        assert time.monotonic() - started < 5
        assert {a["name"]: a["image_count"] for a in listed.json()["albums"]}[album] == 4
        answer = client.get(f"/v1/albums/{album}")
        assert answer.status_code == 200 and answer.json()["image_count"] == 4
        hits = client.post(f"/v1/albums/{album}/search", params={"top_k": 2},
                           files={"file": photos[1].read_bytes()}).json()["results"]
        assert hits[0]["name"] == photos[1].name
        content = client.get(hits[0]["url"])
        assert content.status_code == 200
        assert content.content == photos[1].read_bytes()
