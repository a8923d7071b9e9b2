"""`imagesearch up`: the whole system on this machine, the demo album loaded."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from services.client import GatewayClient, Upload

# `up` keeps its data in the project's folder, wherever it is run from (IMAGESEARCH_DATA: elsewhere).
DEFAULT_DATA = os.environ.get("IMAGESEARCH_DATA", str(Path(__file__).resolve().parent.parent.parent / ".data"))
DEMO_ALBUM = "demo"
# scikit-image's sample photos, with attributes to try filters on (e.g. {"kind": "photo"}).
DEMO_PHOTOS: dict[str, dict[str, Any]] = {
    "astronaut.png": {"kind": "photo", "subject": "person"},
    "chelsea.png": {"kind": "photo", "subject": "cat"},
    "coffee.png": {"kind": "photo", "subject": "food"},
    "rocket.jpg": {"kind": "photo", "subject": "vehicle"},
    "motorcycle_left.png": {"kind": "photo", "subject": "vehicle"},
    "motorcycle_right.png": {"kind": "photo", "subject": "vehicle"},
    "camera.png": {"kind": "photo", "subject": "person"},
    "horse.png": {"kind": "drawing", "subject": "animal"},
    "hubble_deep_field.jpg": {"kind": "photo", "subject": "space"},
    "moon.png": {"kind": "photo", "subject": "space"},
    "coins.png": {"kind": "photo", "subject": "object"},
    "page.png": {"kind": "scan", "subject": "text"},
    "text.png": {"kind": "photo", "subject": "text"},
    "brick.png": {"kind": "texture", "subject": "wall"},
    "grass.png": {"kind": "texture", "subject": "plant"},
    "gravel.png": {"kind": "texture", "subject": "ground"},
    "retina.jpg": {"kind": "microscopy", "subject": "eye"},
    "ihc.png": {"kind": "microscopy", "subject": "tissue"},
    "cell.png": {"kind": "microscopy", "subject": "cell"},
    "clock_motion.png": {"kind": "photo", "subject": "object"},
    "color.png": {"kind": "photo", "subject": "object"},
}



def load_demo_album(client: GatewayClient) -> None:
    """Adds scikit-image's sample photos to the `demo` album unless it already holds them."""
    import skimage

    album = client.ensure_album(DEMO_ALBUM)
    data = Path(skimage.__file__).parent / "data"
    photos = [data / name for name in DEMO_PHOTOS if (data / name).exists()]
    if album.get("image_count", 0) >= len(photos):
        print(f"album {DEMO_ALBUM} is there with {album['image_count']} images")
        return
    uploads = [Upload.from_path(p, DEMO_PHOTOS[p.name]) for p in photos]
    answer = client.add_images(DEMO_ALBUM, uploads)
    print(f"album {DEMO_ALBUM}: {answer['added']} added, {answer['duplicates']} already there")


def cmd_up(args: argparse.Namespace) -> int:
    from services.devstack import PartKeepsFailing, Ports, Stack, Supervisor, port_open

    ports = Ports(http=args.port)
    busy = [f"{name}={port}" for name, port in vars(ports).items() if port_open(port)]
    if busy:
        print(f"ports already in use: {', '.join(busy)} (is the system already running?)", file=sys.stderr)
        return 1
    stack = Stack(Path(args.data), ports)
    stop = threading.Event()

    def on_term(*_: object) -> None:
        stop.set()
        raise KeyboardInterrupt  # also out of a start or restart under way (Milvus can take minutes)

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"starting Milvus, S3, Redis and the services (data in {stack.data_dir}, logs in {stack.logs}) ...")
        stack.start()
        client = GatewayClient(stack.http_url)
        if not args.no_demo:
            load_demo_album(client)
        print(f"\nready: {stack.http_url}/   (API docs: {stack.http_url}/docs, gRPC API on 127.0.0.1:{ports.gateway})")
        print(f"try:   curl -F file=@photo.jpg '{stack.http_url}/v1/albums/{DEMO_ALBUM}/search?top_k=5'")
        print("Ctrl-C stops everything; a part that stops by itself is started again")
        supervisor = Supervisor(stack)
        while not stop.is_set():
            try:
                supervisor.check(announce=lambda line: print(line, file=sys.stderr))
            except PartKeepsFailing as exc:
                print(f"{exc}; stopping", file=sys.stderr)
                return 1
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--data", default=DEFAULT_DATA, help="where data is kept (env IMAGESEARCH_DATA)")
    up.add_argument("--port", type=int, default=8000, help="HTTP port of the API and web page")
    up.add_argument("--no-demo", action="store_true", help="do not load the demo album")
