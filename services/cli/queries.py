"""Queries by an image: search, recognise, find a person's faces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from services.client import GatewayClient


def _query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", help="an image file, or an http(s) URL of one")
    parser.add_argument("--image-id", help="instead, an image of the album (its id: `images`, `search` list them)")


def query_of(args: argparse.Namespace) -> dict[str, Any]:
    """The query image of a search, recognise or faces command: a file's bytes, a URL, or an album image's id."""
    if bool(args.query) == bool(args.image_id):
        raise ValueError("give a query image (a file or URL) or --image-id, one of them")
    if args.image_id:
        return {"image_id": args.image_id}
    if args.query.startswith(("http://", "https://")):
        return {"url": args.query}
    return {"image": Path(args.query).read_bytes()}


def cmd_search(args: argparse.Namespace, client: GatewayClient) -> int:
    filter_doc = json.loads(args.filter) if args.filter else None
    mode = "similar" if args.similar else "copy"
    options: dict[str, Any] = {"top_k": args.top_k, "filter": filter_doc, "mode": mode, "where": args.where,
                               "max_distance": args.max_distance, "region": args.region,
                               "proposals": args.proposals or 0}
    answer = client.search(args.album, **query_of(args), **options)
    print(f"{len(answer['results'])} results in {answer['took_ms']:.1f} ms "
          f"(distance: {answer['metric']}; then matching points where verified)")
    _print_hits(answer["results"], client)
    for n, proposed in enumerate(answer.get("regions", []), 1):
        box = proposed["region"]
        print(f"\nregion {n}: --region {box['x']},{box['y']},{box['width']},{box['height']} "
              f"(score {proposed['score']:.2f}): {len(proposed['results'])} results")
        _print_hits(proposed["results"], client)
    return 0


def _print_hits(hits: list[dict[str, Any]], client: GatewayClient) -> None:
    for rank, hit in enumerate(hits, 1):
        attrs = json.dumps(hit.get("attributes") or {})
        matches = "" if hit.get("matches") is None else f"{hit['matches']:4d}"
        link = f"{client.base_url}{hit['url']}"
        print(f"{rank:3d}  {hit['distance']:.4f} {matches:>4s}  {hit['name']:<32s} {link}  {attrs}")


def cmd_faces(args: argparse.Namespace, client: GatewayClient) -> int:
    """The album's images where the person of the query photo's face appears, nearest first."""
    options: dict[str, Any] = {"top_k": args.top_k, "max_distance": args.max_distance, "face": args.face,
                               "region": args.region}
    answer = client.search_faces(args.album, **query_of(args), **options)
    if args.json:
        print(json.dumps(answer))
        return 0
    face = answer["faces"][answer["face"]]
    print(f"{len(answer['faces'])} face(s) in the query; searched face {answer['face']} at "
          f"{face['x']},{face['y']} {face['width']}x{face['height']}: {_images(len(answer['results']))} of that person "
          f"(distance <= {answer['max_distance']}) in {answer['took_ms']:.1f} ms")
    for rank, hit in enumerate(answer["results"], 1):
        box = hit["face"]
        print(f"{rank:3d}  {hit['distance']:.4f}  {hit['name']:<32s} face {box['x']},{box['y']} "
              f"{box['width']}x{box['height']}  {client.base_url}{hit['url']}")
    return 0


def cmd_recognize(args: argparse.Namespace, client: GatewayClient) -> int:
    options: dict[str, Any] = {"evidence": args.evidence, "threshold": args.threshold, "faces": args.faces}
    answer = client.recognize(args.album, args.label, **query_of(args), **options)
    top = answer["candidates"][0] if answer["candidates"] else None
    if answer["unknown"]:
        nearest = f" (nearest label {top['label']!r}, confidence {top['confidence']:.2f})" if top else ""
        print(f"unknown: the photo is of none of album {args.album}'s {args.label} labels "
              f"(known {answer['known']:.2f} < threshold {answer['threshold']:.2f}){nearest}")
    else:
        print(f"{answer['label']}  confidence {answer['confidence']:.2f}  "
              f"(known {answer['known']:.2f}, threshold {answer['threshold']:.2f})")
    for other in answer["candidates"][1:]:
        print(f"  or {other['label']}  confidence {other['confidence']:.2f}")
    if answer.get("face"):
        box = answer["face"]
        print(f"by the face at {box['x']},{box['y']} {box['width']}x{box['height']} (the photo's largest)")
    calibration = answer["calibration"]
    if calibration["top1"] is not None:
        print(f"calibrated on {calibration['images']} labelled images, {calibration['labels']} labels "
              f"(leave-one-out top-1 {calibration['top1']:.2f})")
    for rank, e in enumerate(answer["evidence"], 1):
        print(f"{rank:3d}  {e['distance']:.4f}  {', '.join(e['labels']):<24s} {e['name']:<32s} "
              f"{client.base_url}{e['url']}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    search = sub.add_parser("search", help="find an album's images nearest to an image file or URL")
    _query_arguments(search)
    search.add_argument("--album", required=True, help="the album's name")
    search.add_argument("--top-k", type=int, default=5, help="how many results (default 5)")
    search.add_argument("--filter", help='a JSON filter, e.g. \'{"kind": "photo"}\'')
    search.add_argument("--where", help="a text filter, e.g. \"price < 50 and colour in ('red', 'blue')\"")
    search.add_argument("--max-distance", type=float, help="no image farther than this (cosine distance)")
    search.add_argument("--similar", action="store_true",
                        help="find images like the query rather than copies of it (search mode 'similar')")
    search.add_argument("--region", metavar="X,Y,W,H",
                        help="search only this box of the query image, in its pixels (after EXIF orientation)")
    search.add_argument("--proposals", type=int, nargs="?", const=3, metavar="N",
                        help="also propose N (default 3, at most 5) regions of the query worth searching (objects "
                             "or salient parts) and show each one's results")
    recognize = sub.add_parser("recognize", help="the label an image file or URL most likely has among an album's "
                                                 "labelled images, or unknown")
    _query_arguments(recognize)
    recognize.add_argument("--album", required=True, help="the album's name")
    recognize.add_argument("--label", required=True, help="the label attribute, e.g. category")
    recognize.add_argument("--evidence", type=int, default=5, help="nearest labelled images to show")
    recognize.add_argument("--threshold", type=float,
                           help="answer unknown below this known probability (default: the album's own)")
    recognize.add_argument("--faces", action="store_true",
                           help="by the photo's largest face (an album created with --faces; e.g. --label person)")
    faces = sub.add_parser("faces", help="find the images of an album (created with --faces) where the person of a "
                                         "photo's face appears")
    _query_arguments(faces)
    faces.add_argument("--album", required=True, help="the album's name")
    faces.add_argument("--top-k", type=int, default=10, help="how many faces (default 10)")
    faces.add_argument("--max-distance", type=float, help="faces farther than this are other people (cosine "
                                                          "distance; default: the gateway's)")
    faces.add_argument("--face", type=int, default=0, help="which face of the photo: 0 the largest (default), 1 ...")
    faces.add_argument("--region", metavar="X,Y,W,H",
                       help="look for faces only in this box of the query image, in its pixels (a small face in a "
                            "large photo: the detector finds faces of at least ~5 %% of the side it looks at)")
    faces.add_argument("--json", action="store_true", help="print the answer as JSON")
    search.set_defaults(run=cmd_search)
    recognize.set_defaults(run=cmd_recognize)
    faces.set_defaults(run=cmd_faces)


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"
