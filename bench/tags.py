"""Tag search through the whole system, scored on the evaluation set's labelled photos (../shared/eval).

The gallery photos are added to an album through the gateway (each gets the extractor's ImageNet labels
as `tags`). Each evaluation class ("fine" of manifest.csv) that has ImageNet counterparts is mapped, below,
to those ImageNet-1k labels by hand; the classes with none (coins, gravestones, monuments, paintings,
planets, the moon, wallpapers, windmills: ImageNet-1k has no windmill, ...) are left out. For each mapped
class every one of its labels is asked for with GET /v1/albums/{album}/images?tag=LABEL, and the union of
the answers is that class's result:

- precision: the share of the returned photos that are of the class; recall: the share of the class's
  photos returned; per class, summed over classes (micro) and averaged (macro);
- the same at higher score floors, from the `tag_scores` stored with the tags (a photo counts when one
  of the class's labels has at least that probability).

A photo of another class that shows the label's object (a cup among household items found by "cup" for
the fruit class, say) counts as wrong, so precision is a lower bound of what a user sees. The last line
is a JSON object.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles, print_json_line, running_stack
from services.client import GatewayClient, Upload

# Evaluation class -> the ImageNet-1k labels (each class's first WordNet lemma) that are of it.
CLASSES: dict[str, tuple[str, ...]] = {
    "amphibian": ("bullfrog", "tree frog", "tailed frog"),
    "bird": ("cock", "hen", "ostrich", "brambling", "goldfinch", "house finch", "junco", "indigo bunting", "robin",
             "bulbul", "jay", "magpie", "chickadee", "water ouzel", "kite", "bald eagle", "vulture",
             "great grey owl", "black grouse", "ptarmigan", "ruffed grouse", "prairie chicken", "peacock", "quail",
             "partridge", "African grey", "macaw", "sulphur-crested cockatoo", "lorikeet", "coucal", "bee eater",
             "hornbill", "hummingbird", "jacamar", "toucan", "drake", "red-breasted merganser", "goose",
             "black swan", "white stork", "black stork", "spoonbill", "flamingo", "little blue heron",
             "American egret", "bittern", "crane", "limpkin", "European gallinule", "American coot", "bustard",
             "ruddy turnstone", "red-backed sandpiper", "redshank", "dowitcher", "oystercatcher", "pelican",
             "king penguin", "albatross"),
    "dam": ("dam",),
    "fish": ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray",
             "barracouta", "eel", "coho", "rock beauty", "anemone fish", "sturgeon", "gar", "lionfish", "puffer"),
    "flower": ("daisy", "yellow lady's slipper"),
    "fruit": ("Granny Smith", "strawberry", "orange", "lemon", "fig", "pineapple", "banana", "jackfruit",
              "custard apple", "pomegranate"),
    "insect": ("tiger beetle", "ladybug", "ground beetle", "long-horned beetle", "leaf beetle", "dung beetle",
               "rhinoceros beetle", "weevil", "fly", "bee", "ant", "grasshopper", "cricket", "walking stick",
               "cockroach", "mantis", "cicada", "leafhopper", "lacewing", "dragonfly", "damselfly", "admiral",
               "ringlet", "monarch", "cabbage butterfly", "sulphur butterfly", "lycaenid", "slug", "isopod"),
    "mammal": ("hog", "ox", "water buffalo", "bison", "ram", "bighorn", "ibex", "sorrel", "zebra", "gorilla",
               "chimpanzee", "orangutan", "lion", "tiger", "brown bear", "American black bear", "ice bear",
               "sloth bear", "koala", "wallaby", "hare", "wood rabbit", "Angora", "fox squirrel", "otter", "badger",
               "sea lion", "killer whale", "grey whale", "dugong", "hippopotamus", "African elephant",
               "Indian elephant", "giant panda", "titi", "capuchin", "marmoset", "golden retriever",
               "Labrador retriever", "German shepherd", "tabby", "Egyptian cat", "tiger cat", "Persian cat",
               "Siamese cat", "cougar", "leopard", "cheetah", "jaguar", "lynx", "meerkat", "mongoose", "skunk",
               "polecat", "mink", "weasel", "beaver", "porcupine", "hamster", "guinea pig", "gazelle", "impala",
               "hartebeest", "llama", "Arabian camel", "armadillo", "three-toed sloth", "timber wolf", "coyote",
               "dingo", "hyena", "red fox", "kit fox", "platypus", "echidna", "wombat", "tusker", "indri",
               "baboon", "macaque", "langur", "colobus", "proboscis monkey", "guenon", "patas", "howler monkey",
               "spider monkey", "squirrel monkey", "gibbon", "siamang"),
    "medical": ("stethoscope", "syringe", "Band Aid"),
    "military_vehicle": ("tank", "half track", "warplane", "cannon", "projectile", "missile"),
    "mushroom": ("mushroom", "agaric", "bolete", "hen-of-the-woods", "stinkhorn", "earthstar", "coral fungus",
                 "gyromitra"),
    "musical_instrument": ("cornet", "violin", "cello", "bassoon", "drum", "acoustic guitar", "electric guitar",
                           "gong", "banjo", "oboe", "sax", "flute", "trombone", "French horn", "harp", "grand piano",
                           "upright", "maraca", "marimba", "steel drum", "accordion", "harmonica"),
    "reptile": ("common iguana", "American chameleon", "African chameleon", "Komodo dragon", "African crocodile",
                "American alligator", "frilled lizard", "agama", "whiptail", "alligator lizard", "green lizard",
                "Gila monster"),
    "shellfish": ("chiton", "Dungeness crab", "rock crab", "fiddler crab", "king crab", "conch"),
    "solar": ("solar dish",),
    "sports": ("basketball", "soccer ball", "tennis ball", "rugby ball", "football helmet", "racket", "baseball",
               "golf ball", "volleyball", "ping-pong ball", "croquet ball"),
    "tool": ("hammer", "screwdriver", "power drill", "chain saw", "hatchet", "cleaver", "plunger", "shovel", "rule",
             "can opener", "corkscrew", "letter opener", "paintbrush", "lawn mower", "hand blower", "spatula"),
    "vegetable": ("head cabbage", "broccoli", "cauliflower", "zucchini", "spaghetti squash", "acorn squash",
                  "butternut squash", "cucumber", "artichoke", "bell pepper", "cardoon", "corn", "ear"),
    "vehicle": ("sports car", "convertible", "cab", "beach wagon", "minivan", "jeep", "limousine", "pickup",
                "fire engine", "garbage truck", "trailer truck", "moving van", "tow truck", "school bus", "trolleybus",
                "tractor", "airliner", "airship", "balloon", "racer", "go-kart", "tricycle", "car wheel", "grille",
                "police van", "minibus", "recreational vehicle", "forklift", "amphibian", "speedboat", "canoe",
                "schooner", "yawl", "catamaran", "trimaran"),
}
FLOORS = (0.1, 0.2, 0.3, 0.5)


def gallery(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


def fill(client: GatewayClient, album: str, root: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    """Adds every gallery photo; returns image id -> evaluation class ("" for none)."""
    classes: dict[str, str] = {}
    for start in range(0, len(rows), 16):
        chunk = rows[start:start + 16]
        uploads = [Upload((root / r["file"]).read_bytes(), r["id"]) for r in chunk]
        for result in client.add_images(album, uploads)["results"]:
            if result["status"] == "added":
                classes[result["id"]] = chunk[result["index"]]["fine"]
            else:
                print(f"  {chunk[result['index']]['file']}: {result['status']} {result.get('error')}", file=sys.stderr)
    return classes


def found_by(client: GatewayClient, album: str, labels: tuple[str, ...],
             latencies: list[float]) -> dict[str, float]:
    """Image id -> the best score among `labels` of every image a tag search for one of them returns."""
    found: dict[str, float] = {}
    for label in labels:
        started = time.perf_counter()
        images = client.list_images(album, limit=1000, tag=label)["images"]
        latencies.append((time.perf_counter() - started) * 1000)
        for image in images:
            attributes = image["attributes"]
            scores = dict(zip(attributes.get("tags", []), attributes.get("tag_scores", []), strict=False))
            found[image["id"]] = max(found.get(image["id"], 0.0), float(scores.get(label, 0.0)))
    return found


def score(classes: dict[str, str], results: dict[str, dict[str, float]], floor: float) -> dict[str, Any]:
    per_class: dict[str, dict[str, Any]] = {}
    for name, found in results.items():
        kept = {i for i, s in found.items() if s >= floor}
        right = sum(1 for i in kept if classes.get(i) == name)
        total = sum(1 for c in classes.values() if c == name)
        per_class[name] = {"returned": len(kept), "right": right, "photos": total,
                           "precision": right / len(kept) if kept else None, "recall": right / total}
    returned = sum(c["returned"] for c in per_class.values())
    right = sum(c["right"] for c in per_class.values())
    photos = sum(c["photos"] for c in per_class.values())
    precisions = [c["precision"] for c in per_class.values() if c["precision"] is not None]
    return {"floor": floor, "precision": right / returned if returned else 0.0, "recall": right / photos,
            "macro_precision": sum(precisions) / len(precisions), "returned": returned, "per_class": per_class}


def evaluate(client: GatewayClient, root: Path) -> dict[str, Any]:
    album = f"tags-{uuid.uuid4().hex[:8]}"
    client.create_album(album, [])
    started = time.perf_counter()
    classes = fill(client, album, root, gallery(root))
    ingest_s = time.perf_counter() - started
    known = set(classes.values())
    latencies: list[float] = []
    results = {name: found_by(client, album, labels, latencies) for name, labels in CLASSES.items() if name in known}
    tagged = sum(1 for image in walk(client, album) if image["attributes"].get("tags"))
    client.delete_album(album)
    floors = [score(classes, results, floor) for floor in FLOORS]
    return {"album_images": len(classes), "tagged_images": tagged, "classes": len(results),
            "class_photos": sum(1 for c in classes.values() if c in results),
            "ingest_images_per_s": round(len(classes) / ingest_s, 1), "tag_query_ms": percentiles(latencies),
            "floors": floors}


def walk(client: GatewayClient, album: str) -> list[dict[str, Any]]:
    images, after = [], ""
    while True:
        page = client.list_images(album, limit=1000, after=after)
        images += page["images"]
        if page.get("next_after") is None:
            return images
        after = page["next_after"]


def report(figures: dict[str, Any]) -> None:
    print(f"{figures['album_images']} photos added ({figures['ingest_images_per_s']} images/s), "
          f"{figures['tagged_images']} with at least one tag; {figures['classes']} evaluation classes mapped "
          f"to ImageNet labels, {figures['class_photos']} photos in them")
    print(f"tag query (GET .../images?tag=): p50 {figures['tag_query_ms']['p50']:.1f} ms")
    print(f"{'floor':>6} {'precision':>10} {'recall':>7} {'macro P':>8} {'returned':>9}")
    for f in figures["floors"]:
        print(f"{f['floor']:>6.2f} {f['precision']:>10.3f} {f['recall']:>7.3f} {f['macro_precision']:>8.3f} "
              f"{f['returned']:>9d}")
    print(f"per class at the stored floor ({figures['floors'][0]['floor']}): right/returned of photos")
    for name, c in sorted(figures["floors"][0]["per_class"].items()):
        p = f"{c['precision']:.2f}" if c["precision"] is not None else "  - "
        print(f"  {name:<20s} P {p}  R {c['recall']:.2f}  ({c['right']}/{c['returned']} of {c['photos']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, required=True, help="evaluation set built by make_evalset.sh")
    parser.add_argument("--url", help="a running gateway; default: start a fresh stack")
    args = parser.parse_args()
    if args.url:
        figures = evaluate(GatewayClient(args.url), args.set)
    else:
        with running_stack() as stack:
            figures = evaluate(GatewayClient(stack.http_url), args.set)
    report(figures)
    base = figures["floors"][0]
    print_json_line({"bench": "tags", "precision": round(base["precision"], 3), "recall": round(base["recall"], 3),
                     "macro_precision": round(base["macro_precision"], 3), "floor": base["floor"],
                     "classes": figures["classes"], "class_photos": figures["class_photos"],
                     "photos": figures["album_images"], "tagged": figures["tagged_images"],
                     "by_floor": {str(f["floor"]): [round(f["precision"], 3), round(f["recall"], 3)]
                                  for f in figures["floors"]},
                     "tag_query_p50_ms": round(figures["tag_query_ms"]["p50"], 1)})


if __name__ == "__main__":
    main()
