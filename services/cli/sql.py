"""One SQL statement run, its local images sent with it, its answer printed as a table."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.cli.tables import print_table
from services.client import GatewayClient

# A string literal of a SQL statement: 'it''s' (quotes doubled inside).
_SQL_STRING = re.compile(r"'((?:[^']|'')*)'")


def named_files(statement: str, given: Sequence[str]) -> dict[str, bytes]:
    """The images a statement names as local files: `--file NAME=PATH` given, and every string literal of
    the statement that is the path of a file here (uploaded under that name)."""
    files: dict[str, bytes] = {}
    for spec in given:
        name, _, path = spec.partition("=")
        files[name] = Path(path or name).read_bytes()
    for match in _SQL_STRING.finditer(statement):
        literal = match.group(1).replace("''", "'")
        if literal not in files and not literal.startswith(("http://", "https://")) and Path(literal).is_file():
            files[literal] = Path(literal).read_bytes()
    return files


def cmd_sql(args: argparse.Namespace, client: GatewayClient) -> int:
    answer = client.sql(args.statement, named_files(args.statement, args.file or []), args.delete_all)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print_sql_result(answer, client.base_url)
    return 0


def print_sql_result(answer: dict[str, Any], base_url: str) -> None:
    """A statement's result as a table (SELECT), or what it changed."""
    columns, rows = answer.get("columns") or [], answer.get("rows") or []
    if columns:
        linked = any(row.get("image") for row in rows)  # a row of an image ends with its link
        cells = [[_cell_text(v) for v in row["values"]] + ([f"{base_url}{row['image']['url']}" if row.get("image")
                                                            else ""] if linked else []) for row in rows]
        print_table([*columns, "image"] if linked else columns, cells, last_whole=linked)
    summary = f"{answer['statement'].replace('_', ' ').upper()} {answer['album']}: "
    summary += f"{answer['affected']} affected" if answer.get("affected") is not None else f"{len(rows)} row(s)"
    print(f"{summary} in {answer['took_ms']:.1f} ms")


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):  # 9.99, 10.0, a distance 0.1234: four decimals at most
        text = f"{value:.4f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sql = sub.add_parser("sql", help="run one SQL statement (CREATE TABLE, INSERT, SELECT, UPDATE, DELETE, DROP)")
    sql.add_argument("statement", help="one SQL statement; local image paths in it (or --file) are sent with it")
    sql.add_argument("--file", action="append", metavar="NAME=PATH",
                     help="an image the statement names as image('NAME'); local paths in the statement are sent "
                          "by themselves")
    sql.add_argument("--delete-all", action="store_true", help="let a DELETE without WHERE delete every image")
    sql.add_argument("--json", action="store_true", help="print the answer as JSON")
    sql.set_defaults(run=cmd_sql)
