"""The `imagesearch` command line: run the system, ingest images, search, manage albums.

    imagesearch up [--data DIR] [--port 8000]        run servers + services, load the demo album
    imagesearch ingest PATH|URL... --album A         add files, folders (recursively) or URLs
    imagesearch search IMAGE|URL --album A [--similar] [--where TEXT] [--region X,Y,W,H] [--proposals [N]]
                                                     the nearest images (and of each region proposed)
    imagesearch recognize IMAGE|URL --album A --label category          the label, or unknown
    imagesearch images --album A [--tag espresso] [--where TEXT]     list images (found by a word)
    imagesearch image ID --album A [--faces] [--save FILE]           one image, its bytes saved
    imagesearch update-images ID... | --where TEXT --album A --set NAME=VALUE   change attributes; delete-images
    imagesearch sql "SELECT ... ORDER BY feature <-> image('q.jpg')"   run one SQL statement
    imagesearch albums | create-album A --column price:float | delete-album A
    imagesearch reembed --album A                    re-embed an album with the current model
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import httpx

from services.cli import albums, edits, images, ingest, jobs, queries, sql, up
from services.cli.jobs import GatewayGone, follow_import, import_line, import_summary, start_import
from services.cli.packing import pack_images
from services.cli.sql import print_sql_result
from services.client import ApiError, GatewayClient

__all__ = ["GatewayGone", "build_parser", "follow_import", "import_line", "import_summary", "main", "pack_images",
           "print_sql_result", "start_import"]

DEFAULT_URL = os.environ.get("IMAGESEARCH_URL", "http://127.0.0.1:8000")


def build_parser() -> argparse.ArgumentParser:
    """Every command, each module adding its own (with `run`, the function that carries it out)."""
    parser = argparse.ArgumentParser(prog="imagesearch", description="Search by image.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the gateway's HTTP address (env IMAGESEARCH_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (up, ingest, jobs, queries, images, edits, albums, sql):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "up":
        return up.cmd_up(args)
    client = GatewayClient(args.url)
    try:
        run: Callable[[argparse.Namespace, GatewayClient], int] = args.run
        return run(args, client)
    except httpx.TimeoutException as exc:
        print(f"error: the gateway at {args.url} did not answer in time ({type(exc).__name__}); what was asked may "
              "still be under way (an import: `imagesearch imports` lists it)", file=sys.stderr)
        return 2
    except httpx.RemoteProtocolError as exc:
        print(f"error: the gateway at {args.url} broke off its answer midway ({exc}); what was written of it is "
              "incomplete", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        print(f"error: cannot reach the gateway at {args.url} ({type(exc).__name__}: {exc}); is it running? "
              "(`imagesearch up` starts it; --url or IMAGESEARCH_URL point elsewhere)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # What reads the output stopped early (`| head`): stop quietly, as other command-line tools do; what is
        # still buffered for it goes nowhere (not a second error as Python exits).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ApiError, GatewayGone, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()


