"""Attribute manifests of imports: CSV cells read by the album's column types, JSONL rows as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.manifest import (
    ManifestError,
    ManifestFiles,
    guess_column_types,
    json_column_types,
    parse_manifest,
    read_manifest,
    split_manifest,
)

COLUMNS = {"price": "float", "qty": "int", "in_stock": "bool", "sizes": "string_list", "listed_at": "timestamp"}


def test_csv_cells_take_the_declared_types_and_empty_cells_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "shoes.csv"
    path.write_text("file,price,qty,in_stock,sizes,listed_at,note\n"
                    "a.jpg,39.5,3,yes,41|42,2024-01-01,hello\n"
                    "sub/b.jpg,,,false,,,\n")
    manifest = read_manifest(path, COLUMNS)
    assert manifest["a.jpg"] == {"price": 39.5, "qty": 3, "in_stock": True, "sizes": ["41", "42"],
                                 "listed_at": "2024-01-01", "note": "hello"}
    assert manifest["sub/b.jpg"] == {"in_stock": False}
    files = ManifestFiles(manifest)
    assert [files.key_of(p) for p in ("sub/b.jpg", "x/a.jpg", "c.jpg")] == ["sub/b.jpg", "a.jpg", None]


def test_a_row_names_a_file_by_its_path_from_the_folder_sent_or_from_a_folder_above_it() -> None:
    files = ManifestFiles(["gallery/a.jpg", "gallery/sub/b.jpg", "c.jpg", "x/d.jpg", "y/d.jpg", "./e.jpg"])
    # The folder `gallery` sent: its files' paths start below it.
    assert files.key_of("a.jpg") == "gallery/a.jpg" and files.key_of("sub/b.jpg") == "gallery/sub/b.jpg"
    assert files.key_of("photos/2024/c.jpg") == "c.jpg"  # a bare name: any folder's file of that name
    assert files.key_of("other/a.jpg") is None  # a row for gallery/a.jpg, not for another folder's a.jpg
    assert files.key_of("d.jpg") is None  # two rows match as well: neither is taken
    assert files.key_of("x/d.jpg") == "x/d.jpg" and files.key_of("e.jpg") == "./e.jpg"
    assert files.matched == {"gallery/a.jpg", "gallery/sub/b.jpg", "c.jpg", "x/d.jpg", "./e.jpg"}


def test_the_row_naming_the_files_own_path_comes_first() -> None:
    files = ManifestFiles(["a.jpg", "sub/a.jpg", "d.jpg", "x/d.jpg", "y/d.jpg"])
    assert [files.key_of(p) for p in ("a.jpg", "sub/a.jpg", "d.jpg", "x/d.jpg", "z/d.jpg")] == \
        ["a.jpg", "sub/a.jpg", "d.jpg", "x/d.jpg", "d.jpg"]


def test_jsonl_rows_keep_their_json_values(tmp_path: Path) -> None:
    path = tmp_path / "shoes.jsonl"
    path.write_text('{"file": "a.jpg", "price": 39.5, "sizes": ["41"]}\n\n{"path": "b.jpg", "in_stock": true}\n')
    assert read_manifest(path, COLUMNS) == {"a.jpg": {"price": 39.5, "sizes": ["41"]}, "b.jpg": {"in_stock": True}}


@pytest.mark.parametrize(("name", "text", "words"), [
    ("m.csv", "file,price\na.jpg,cheap\n", "line 2: price is a float column"),
    ("m.csv", "file,qty\na.jpg,1.5\n", r"qty is an int column and '1.5' is not one \(not a whole number\)"),
    ("m.csv", "file,price\na.jpg,nan\n", r"price is a float column and 'nan' is not one \(not a finite number\)"),
    ("m.csv", "file,price\na.jpg,1e999\n", r"'1e999' is not one \(too large\)"),
    ("m.csv", "file,qty\na.jpg,9223372036854775808\n", r"qty is an int column .* \(outside the 64-bit range\)"),
    ("m.csv", "file,qty\na.jpg,1_000\n", r"'1_000' is not one \(not a whole number\)"),
    ("m.csv", "file,in_stock\na.jpg,maybe\n", "in_stock"),
    ("m.csv", "price\n3\n", "names no file"),
    ("m.csv", "file,price\na.jpg,1\na.jpg,2\n", "has a row already"),
    ("m.csv", "file,price\na.jpg,1,2\n", "more cells"),
    ("m.jsonl", '{"file": "a.jpg"}\n[1]\n', "line 2"),
    ("m.jsonl", "{oops\n", "not JSON"),
    ("m.txt", "file\n", ".csv or .jsonl"),
])
def test_a_bad_manifest_names_the_line_and_the_problem(tmp_path: Path, name: str, text: str, words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError, match=words):
        read_manifest(path, COLUMNS)


def test_every_bad_row_of_a_manifest_is_named_at_once(tmp_path: Path) -> None:
    """One run finds them all: the rows that cannot be read, each with its line (the first 20, then a count)."""
    path = tmp_path / "m.csv"
    path.write_text("file,price,in_stock\na.jpg,cheap,true\nb.jpg,2,maybe\nc.jpg,3,yes\nc.jpg,4,no\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(path, COLUMNS)
    assert str(caught.value) == (
        f"{path}: 3 rows cannot be read: line 2: price is a float column and 'cheap' is not one (not a number); "
        "line 3: in_stock is a bool column and 'maybe' is not one (not true or false); "
        "line 5: 'c.jpg' has a row already")
    path.write_text("file,price\n" + "".join(f"{n}.jpg,x\n" for n in range(25)))
    with pytest.raises(ManifestError, match=r"^.*25 rows cannot be read: line 2: .*; line 21: [^;]*; and 5 more$"):
        read_manifest(path, COLUMNS)


def test_a_bad_row_is_named_by_the_line_it_starts_on() -> None:
    """Blank lines and line breaks quoted in a cell count (the reader's rows are not lines); a JSONL row holding a
    character str.splitlines() would cut at (U+2028, written raw by json.dumps(ensure_ascii=False)) stays one row."""
    csv_text = 'file,price,note\n\na.jpg,x,\nb.jpg,1,"two\nlines"\n\nc.jpg,y,\n'
    with pytest.raises(ManifestError, match=r"line 3: price .*'x'.*; line 7: price .*'y'"):
        parse_manifest(csv_text, ".csv", COLUMNS)
    jsonl = '{"file": "a.jpg", "note": "one\u2028row"}\r\n[1]\n'
    with pytest.raises(ManifestError, match=r"^line 2: a row is a JSON object$"):
        parse_manifest(jsonl, ".jsonl", COLUMNS)
    assert parse_manifest(jsonl.split("\r\n")[0], ".jsonl", COLUMNS) == {"a.jpg": {"note": "one\u2028row"}}


def test_a_csv_manifest_s_columns_are_guessed_as_the_type_all_their_cells_read_as() -> None:
    text = ("\ufefffile,name,qty,price,in_stock,sizes,when,note,sku,tags,tag_scores,Bad Name,distance\n"
            "a.jpg,A,3,8.25,true,41|42,2024-03-01,hi,00123,espresso,0.5,x,1\n"
            "b.jpg,B,-4,10,no,,2024-05-01t10:00:00z,,00124,cup,0.4,y,2\n"
            "c.jpg,C,,1e3,,43,,007,A-77,,,z,3\n")
    # Numbers as float (a later 9.99 fits), codes with a leading zero as text, `tags` a list (the network's labels'
    # column) and its scores left out; not the file's or the name's, nor a name no column may have.
    assert guess_column_types(text) == {"qty": "float", "price": "float", "in_stock": "bool", "sizes": "string_list",
                                        "when": "timestamp", "note": "string", "sku": "string", "tags": "string_list"}
    assert guess_column_types("file,blank\na.jpg,\n") == {"blank": "string"}  # no cell to go by: text
    assert guess_column_types("file,mixed,bits\na.jpg,1,1\nb.jpg,x,0\n") == {"mixed": "string", "bits": "float"}
    given = {"source": "shop", "n": 3, "share": 0.5, "new": True, "tags": ["a"], "none": None, "deep": {"a": 1},
             "mixed": ["a", 1], "Bad": "x", "tag_scores": [0.5]}
    assert json_column_types(given) == {"source": "string", "n": "float", "share": "float", "new": "bool",
                                        "tags": "string_list"}


def test_a_manifest_split_into_parts_keeps_its_format_and_each_row_whole() -> None:
    """Each part's manifest reads (by `parse_manifest`) as the whole one's rows of its keys: a CSV cell holding a
    line break and a comma, a JSON row holding U+2028, a row given to two parts, one to none."""
    csv_text = '\ufefffile,price,note\na.jpg,1.5,"two\nlines, one cell"\nb.jpg,2,\nhttp://x/c.jpg,3,c\n'
    parts = split_manifest(csv_text, ".csv", [{"a.jpg", "http://x/c.jpg"}, {"a.jpg"}, set()])
    assert parts[2] == "file,price,note\n"
    whole = parse_manifest(csv_text, ".csv", {"price": "float"})
    assert parse_manifest(parts[0], ".csv", {"price": "float"}) == {k: whole[k] for k in ("a.jpg", "http://x/c.jpg")}
    assert parse_manifest(parts[1], ".csv", {"price": "float"}) == {"a.jpg": whole["a.jpg"]}
    jsonl = '{"file": "a.jpg", "note": "x\u2028y"}\n\n{"url": "http://x/c.jpg"}\r\n{"path": "sub/b.jpg", "n": 1}\n'
    first, second = split_manifest(jsonl, ".jsonl", [{"a.jpg", "sub/b.jpg"}, {"http://x/c.jpg"}])
    assert parse_manifest(first, ".jsonl", {}) == {"a.jpg": {"note": "x\u2028y"}, "sub/b.jpg": {"n": 1}}
    assert parse_manifest(second, ".jsonl", {}) == {"http://x/c.jpg": {}}

