"""Images changed or deleted: by id, or every image a filter matches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from services.cli.images import print_image
from services.client import ApiError, GatewayClient
from services.common.manifest import LIST_SEPARATOR, cell_value
from services.common.schema import TAGS_ATTRIBUTE


def chosen(args: argparse.Namespace) -> str:
    """Which images a command acts on, checked: `ids`, `where` or `all` (one of them)."""
    given = [what for what, on in (("ids", bool(args.ids)), ("where", bool(args.where)), ("all", args.all)) if on]
    if len(given) != 1:
        raise ValueError("name the images: their ids, --where FILTER, or --all (one of them)")
    return given[0]


def changes_of(sets: Sequence[str], unsets: Sequence[str], columns: dict[str, str]) -> dict[str, Any]:
    """The attributes `--set NAME=VALUE` and `--unset NAME` give, each value read as its declared column's type
    (as a CSV manifest's cells are: int, float, bool as true/false, a string list split at '|'; the tags a list
    too; undeclared: text)."""
    columns = {TAGS_ATTRIBUTE: "string_list", **columns}
    changes: dict[str, Any] = {}
    for spec in sets:
        name, equals, value = spec.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, not {spec!r}")
        changes[name.strip()] = cell_value(value, columns.get(name.strip()), name.strip())
    for name in unsets:
        if name.strip() in changes:
            raise ValueError(f"{name.strip()} is both set and unset: one of them")
        changes[name.strip()] = None
    if "name" in changes:
        raise ValueError("an image's name is not an attribute: --name renames one image")
    return changes


def cmd_update_images(args: argparse.Namespace, client: GatewayClient) -> int:
    target = chosen(args)
    if args.name is not None and (target != "ids" or len(args.ids) != 1):
        raise ValueError("--name renames one image: give its id alone")
    album = client.album(args.album)
    changes = changes_of(args.set or [], args.unset or [], {c["name"]: c["type"] for c in album.get("columns", [])})
    if not changes and args.name is None:
        raise ValueError("nothing to change: give --set NAME=VALUE, --unset NAME or --name")
    if target != "ids":
        updated = client.update_images(args.album, changes, where=args.where, all=args.all)
        print(f"album {args.album}: {updated} image(s) updated")
        return 0
    def update(image_id: str) -> None:
        image = client.update_image(args.album, image_id, changes, args.name)
        if len(args.ids) == 1:  # one image: as it is now, in place of a count
            print_image(image, None, client.base_url)

    return _each(args.ids, update, "updated", args.album, summary=len(args.ids) > 1)


def cmd_delete_images(args: argparse.Namespace, client: GatewayClient) -> int:
    if chosen(args) != "ids":
        deleted = client.delete_images(args.album, where=args.where, all=args.all)
        print(f"album {args.album}: {deleted} image(s) deleted")
        return 0
    return _each(args.ids, lambda image_id: client.delete_image(args.album, image_id), "deleted", args.album)


def _each(ids: Sequence[str], act: Callable[[str], object], done: str, album: str, summary: bool = True) -> int:
    """Acts on each image by id; one the album lacks is said and skipped, any other error (no such album among
    them) stops. Exit status 0 all done, 1 some not found, 2 none found."""
    missing = acted = 0
    try:
        for image_id in ids:
            try:
                act(image_id)
                acted += 1
            except ApiError as exc:
                if exc.reason != "image_not_found":
                    raise
                print(f"error: {exc.message}", file=sys.stderr)
                missing += 1
    finally:  # also when an error stops it: what was done before it
        if summary or missing:
            left = len(ids) - acted - missing
            print(f"album {album}: {acted} image(s) {done}" + (f", {missing} not found" if missing else "")
                  + (f", {left} not reached" if left else ""))
    return 0 if not missing else 1 if missing < len(ids) else 2


def _which(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="the images' ids (`images`, `search` list them)")
    parser.add_argument("--album", required=True, help="the album's name")
    parser.add_argument("--where", help="instead, every image matching this filter, e.g. \"price > 100\"")
    parser.add_argument("--all", action="store_true", help="instead, every image of the album")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = sub.add_parser("update-images", help="change images' attributes (one image's name too); their vectors "
                                                  "and bytes stay")
    _which(update)
    update.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="an attribute, read as its column's type (bool: true/false, yes/no or 1/0; string_list "
                             f"and tags: items split at '{LIST_SEPARATOR}'; undeclared: text)")
    update.add_argument("--unset", action="append", metavar="NAME", help="clear this attribute")
    update.add_argument("--name", help="the image's new name (one image)")
    update.set_defaults(run=cmd_update_images)
    delete = sub.add_parser("delete-images", help="delete images with their bytes, vectors and features")
    _which(delete)
    delete.set_defaults(run=cmd_delete_images)
