"""An album's images: listed, counted, exported, grouped as near-duplicates; one shown, its bytes saved."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.cli.tables import print_table
from services.client import GatewayClient


def cmd_export(args: argparse.Namespace, client: GatewayClient) -> int:
    """Writes every image (matching --where, tagged --tag) as a JSON line, as the gateway lists it: id, name,
    attributes, creation time, content hash, links; read as the gateway streams them (any size of album)."""
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115 (stdout is not ours to close)
    count = 0
    try:
        for line in client.export_images(args.album, args.where, args.tag):
            out.write(line + "\n")
            count += 1
    finally:
        if args.out:
            out.close()
    print(f"exported {count} image(s) of album {args.album}", file=sys.stderr)
    return 0


def cmd_images(args: argparse.Namespace, client: GatewayClient) -> int:
    """Lists an album's images (those tagged with a word's labels, with --tag), a line each: id, name
    and its tags with their probabilities."""
    page = client.list_images(args.album, limit=args.limit, where=args.where, tag=args.tag, order_by=args.order_by,
                              desc=args.desc, after=args.after or "", offset=args.offset, nulls=args.nulls)
    for image in page["images"]:
        if args.json:
            print(json.dumps(image, ensure_ascii=False))
            continue
        attributes = image.get("attributes") or {}
        tags, scores = attributes.get("tags") or [], attributes.get("tag_scores") or []
        shown = ", ".join(f"{t} {s:.2f}" if isinstance(s, int | float) else str(t)
                          for t, s in zip(tags, [*scores, *[None] * len(tags)], strict=False))
        ordered = ""  # the value it is ordered by, beside its name
        if args.order_by and args.order_by not in ("id", "name"):  # a built-in at the top, else an attribute
            value = _added(image) if args.order_by == "created_at" else image.get("content_hash") \
                if args.order_by == "content_hash" else attributes.get(args.order_by)
            ordered = f"  {args.order_by}={'NULL' if value is None else value}"
        print(f"{image['id']}  {image['name']:<32s}{ordered}  {shown}".rstrip())
    if not page["images"]:
        more = " more" if args.after or args.offset else ""  # past a last page that was full
        print(f"no{more} images{f' tagged {args.tag!r}' if args.tag else ''} in album {args.album}", file=sys.stderr)
    elif page.get("next_after"):
        print(f"more: --after {page['next_after']}", file=sys.stderr)
    elif args.order_by and len(page["images"]) == args.limit:
        print(f"more: --offset {args.offset + args.limit}", file=sys.stderr)
    return 0


def cmd_count(args: argparse.Namespace, client: GatewayClient) -> int:
    """How many images the album has (matching --where); with --by, how many have each combination of those
    columns' values, most first: a line a group (the values, then the count), or the gateway's answer with --json."""
    if not args.by:
        count = client.count_images(args.album, args.where)
        print(json.dumps({"count": count}) if args.json else count)
        return 0
    found = client.group_images(args.album, args.by, args.where)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    print_table([*found["columns"], "count"], [
        ["NULL" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
         for v in group["key"]] + [str(group["count"])] for group in found["groups"]], last_whole=True)
    return 0


def cmd_duplicates(args: argparse.Namespace, client: GatewayClient) -> int:
    """The album's groups of near-duplicates, the largest first: a line a group, then a line an image (id,
    name, link); with --json the gateway's answer."""
    found = client.duplicates(args.album, args.max_distance)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    for number, group in enumerate(found["groups"], 1):
        print(f"group {number}: {len(group['images'])} images, each within {group['distance']:.4f} of another")
        for image in group["images"]:
            print(f"  {image['id']}  {image['name']:<40s}  {client.base_url}{image['url']}")
    in_groups = sum(len(g["images"]) for g in found["groups"])
    print(f"album {args.album}: {len(found['groups'])} group(s) of near-duplicates ({in_groups} images) within "
          f"distance {found['max_distance']}", file=sys.stderr)
    return 0


def cmd_image(args: argparse.Namespace, client: GatewayClient) -> int:
    """One image: what is stored of it, its attributes (and its faces, with --faces); --save writes its bytes."""
    image = client.get_image(args.album, args.id)
    found = client.image_faces(args.album, args.id) if args.faces else None
    if args.save:  # first: a path that cannot be written is the answer, not a line after the image
        content = client.image_content(args.album, args.id)
        Path(args.save).write_bytes(content)
        print(f"saved {len(content):,} bytes to {args.save}", file=sys.stderr)
    if args.json:
        print(json.dumps({**image, **({"faces": found["faces"]} if found else {})}, indent=2, ensure_ascii=False))
    else:
        print_image(image, found, client.base_url)
    return 0


def _added(image: dict[str, Any]) -> str:
    """When the image was added, as ISO 8601 in UTC."""
    return datetime.fromtimestamp(image["created_at_ms"] / 1000, UTC).isoformat(timespec="seconds")


def print_image(image: dict[str, Any], found: dict[str, Any] | None, base_url: str) -> None:
    """An image as a list of facts, then its attributes, then its faces (boxes in its pixels) if asked for."""
    added = _added(image)
    stored = ", ".join(p for p in (image.get("content_type"), image.get("size_bytes") and
                                   f"{image['size_bytes']:,} bytes") if p)
    facts = [("id", image["id"]), ("name", image["name"]), ("album", image["album"]), ("stored", stored),
             ("added", added.replace("+00:00", "Z")), ("content hash", image["content_hash"]),
             ("bytes", f"{base_url}{image['url']}")]
    for label, value in facts:
        if value:
            print(f"{label:<13s} {value}")
    attributes = image.get("attributes") or {}
    print("attributes" + ("" if attributes else "    none"))
    for key, value in attributes.items():
        print(f"  {key:<20s} {'NULL' if value is None else json.dumps(value, ensure_ascii=False)}")
    if found is not None:
        faces = found["faces"]
        print(f"faces         {len(faces)} in {found['width']}x{found['height']}")
        for number, face in enumerate(faces):
            print(f"  {number}  {face['x']},{face['y']} {face['width']}x{face['height']}  score {face['score']:.2f}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser("export", help="write every image's metadata as JSON lines (any size of album)")
    export.add_argument("--album", required=True, help="the album's name")
    export.add_argument("--out", help="a file to write (default: standard output)")
    export.add_argument("--where", help="only the images matching this filter")
    export.add_argument("--tag", help="only the images tagged with this word (see images --tag)")
    listing = sub.add_parser("images", help="list an album's images with their tags; --tag finds them by a word")
    listing.add_argument("--album", required=True, help="the album's name")
    listing.add_argument("--tag", help="a word: images whose ImageNet labels have it among their WordNet lemmas "
                                       "(e.g. espresso, 'tabby cat'), or a tag set by hand")
    listing.add_argument("--where", help="only the images matching this filter too")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")
    listing.add_argument("--order-by", help="a column (or name, created_at) to order by; default: by id")
    listing.add_argument("--desc", action="store_true", help="with --order-by: the largest first")
    listing.add_argument("--nulls", choices=["first", "last"],
                         help="with --order-by: where images without a value go (default: last, first with --desc)")
    listing.add_argument("--after", help="by id: the page after this id (the `more:` line of the page before)")
    listing.add_argument("--offset", type=int, default=0, help="with --order-by: skip this many")
    listing.add_argument("--json", action="store_true", help="each image as a JSON object a line: its attributes, "
                                                             "what is stored of it, its links")
    counting = sub.add_parser("count", help="how many images an album has (matching a filter); --by: how many "
                                            "have each value of columns")
    counting.add_argument("--album", required=True, help="the album's name")
    counting.add_argument("--where", help="only the images matching this filter")
    counting.add_argument("--by", action="append", metavar="COLUMN", help="group by this column (built-in or "
                                                                         "declared; again for more columns)")
    counting.add_argument("--json", action="store_true", help="the answer as JSON")
    counting.set_defaults(run=cmd_count)
    dupes = sub.add_parser("duplicates", help="groups of near-duplicate images of an album (the same photo resaved, "
                                              "resized, lightly edited)")
    dupes.add_argument("--album", required=True, help="the album's name")
    dupes.add_argument("--max-distance", type=float, help="at most this far apart (cosine distance; default: the "
                                                          "gateway's near-duplicate distance, the one imports use)")
    dupes.add_argument("--json", action="store_true", help="the answer as JSON")
    export.set_defaults(run=cmd_export)
    listing.set_defaults(run=cmd_images)
    dupes.set_defaults(run=cmd_duplicates)
    shown = sub.add_parser("image", help="one image of an album: its name, attributes, what is stored (its faces "
                                         "with --faces); --save writes its bytes")
    shown.add_argument("id", help="the image's id")
    shown.add_argument("--album", required=True, help="the album's name")
    shown.add_argument("--faces", action="store_true", help="also the faces found in it (an album created with "
                                                            "--faces); --face N of `faces` searches one")
    shown.add_argument("--save", metavar="PATH", help="write the image's original bytes to this file")
    shown.add_argument("--json", action="store_true", help="the image as JSON")
    shown.set_defaults(run=cmd_image)
