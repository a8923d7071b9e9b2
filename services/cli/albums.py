"""Albums: listed, created with declared columns, deleted."""

from __future__ import annotations

import argparse
import sys

from services.client import GatewayClient


def cmd_albums(args: argparse.Namespace, client: GatewayClient) -> int:
    for album in client.list_albums():
        columns = ", ".join(f"{c['name']} {c['type']}" for c in album.get("columns", []))
        print(f"{album['name']:<24s} {album['image_count']:>8d} images  model {album['model']}"
              + (f"  columns: {columns}" if columns else "") + ("  faces" if album.get("faces") else "")
              + ("  details" if album.get("details") else ""))
    return 0


def cmd_create_album(args: argparse.Namespace, client: GatewayClient) -> int:
    columns = []
    for spec in args.column or []:
        name, _, kind = spec.partition(":")
        columns.append({"name": name.strip(), "type": kind.strip() or "string"})
    album = client.create_album(args.album, columns, faces=args.faces, details=args.details)
    keeps = [what for what, on in (("faces", album.get("faces")), ("a keypoint index for details",
                                                                    album.get("details"))) if on]
    print(f"created album {album['name']}" + (f" with columns {', '.join(c['name'] for c in columns)}" if columns
                                              else "") + (f" (indexing {' and '.join(keeps)})" if keeps else ""))
    return 0



def cmd_delete_album(args: argparse.Namespace, client: GatewayClient) -> int:
    """Deletes the album; at a terminal, unless --yes, after asking (a script's call is not asked)."""
    if not args.yes and sys.stdin.isatty():
        album = client.get_album(args.album)
        if album is None:
            raise ValueError(f"no album {args.album!r}")
        answer = input(f"delete album {args.album} and its {album['image_count']} image(s) for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print(f"kept album {args.album}")
            return 1
    client.delete_album(args.album)
    print(f"deleted album {args.album}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("albums", help="list albums").set_defaults(run=cmd_albums)
    create = sub.add_parser("create-album", help="create an album, with declared (typed) columns")
    create.add_argument("album")
    create.add_argument("--faces", action="store_true", help="also find the faces of every image added (for `faces`)")
    create.add_argument("--details", action="store_true",
                        help="also keep a keypoint index of every image added, so that a close-up of a detail finds "
                             "the image it was cut from (~200 KB per image: for albums up to some 100,000 images)")
    create.add_argument("--column", action="append", metavar="NAME:TYPE",
                        help="a declared column; TYPE is string, int, float, bool, timestamp or string_list")
    delete = sub.add_parser("delete-album", help="delete an album and its images")
    delete.add_argument("album")
    delete.add_argument("--yes", action="store_true", help="do not ask first (at a terminal it asks)")
    create.set_defaults(run=cmd_create_album)
    delete.set_defaults(run=cmd_delete_album)
