"""Faces through the whole system, on real photos of people that ship in packages.

    .venv/bin/python bench/faces.py [--set .cache/evalset] [--gallery 150]

Photos (what they can and cannot show):
- people: the face_recognition 1.3.0 sdist's test photos (scripts/setup.sh --dev puts them in
  .cache/faces/people): three White House photos of one person (obama, obama2, obama3) and one of
  another (biden); public domain. The only identity with several real photos found in any package:
  three same-person pairs, so a same-person figure is a handful of pairs, not a rate.
- groups: the six demo photos of npm @vladmandic/face-api 1.7.15 (MIT package; fetched here with
  `npm pack` into .cache/faces/groups when npm is there): group photos of 3-6 people each, 23 faces by
  eye, whose identities are not given. Two faces of one photo are two people (known different pairs);
  faces of different group photos are not paired (they could be the same person).
- no faces expected: the first --gallery photos of the evaluation set (../shared/eval), as the rest of
  an album; the faces found there are counted, not judged.

Measured: detection (faces found against faces by eye), each face's descriptor distance to every other
(extractor, DescribeFaces): same-person pairs against known different-person pairs, and the share of each
within the gateway's face_match_distance; then through the gateway, in an album created with faces: each
photo of the person with several finds the others (R@1, R@2 by image id, its own photo left out), a
person's photo finds no other person within the distance; the cost of faces per image (DescribeFaces
alone, and an add of the same photos to an album with faces against one without). Last line: JSON.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagesearch.v1 import extractor_pb2, extractor_pb2_grpc

from bench.common import ROOT, gallery_files, print_json_line, running_stack
from services.client import GatewayClient, Upload
from services.gateway.settings import GatewaySettings

PEOPLE = ROOT / ".cache" / "faces" / "people"
GROUPS = ROOT / ".cache" / "faces" / "groups"
# Faces in the face-api demo photos, counted by eye (frontal or turned, all visible).
FACES_BY_EYE = {"sample1": 3, "sample2": 3, "sample3": 3, "sample4": 4, "sample5": 6, "sample6": 4}


def person_of(stem: str) -> str:
    return stem.rstrip("0123456789")


def group_photos() -> list[Path]:
    """The face-api demo photos, fetched once with npm (none without npm)."""
    if not (GROUPS / ".done").exists():
        if shutil.which("npm") is None:
            print("npm not found: no group photos", file=sys.stderr)
            return []
        GROUPS.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", "-q", "@vladmandic/face-api@1.7.15"], cwd=tmp, check=True,
                           capture_output=True)
            with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
                for member in tar.getmembers():
                    if member.name.startswith("package/demo/sample") and member.name.endswith(".jpg"):
                        member.name = Path(member.name).name
                        tar.extract(member, GROUPS)
        (GROUPS / ".done").touch()
    return sorted(GROUPS.glob("sample*.jpg"))


def describe(port: int, paths: list[Path]) -> tuple[dict[str, Any], float]:
    """Each photo's faces from the extractor, and the mean CPU-wall seconds per photo (one at a time)."""
    found: dict[str, Any] = {}
    took = 0.0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[paths[0].read_bytes()]), timeout=120)  # load
        for path in paths:
            started = time.perf_counter()
            reply = stub.DescribeFaces(extractor_pb2.DescribeFacesRequest(images=[path.read_bytes()]), timeout=120)
            took += time.perf_counter() - started
            found[path.stem] = reply.results[0]
    return found, took / len(paths)


def pair_distances(faces: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(same-person distances, known different-person distances) over the faces' descriptors."""
    same: list[float] = []
    different: list[float] = []
    described = [(stem, k, np.asarray(f.descriptor)) for stem, r in faces.items() for k, f in enumerate(r.faces.faces)]
    for (s1, k1, d1), (s2, k2, d2) in itertools.combinations(described, 2):
        distance = float(1 - d1 @ d2)
        named = s1 in NAMED and s2 in NAMED
        if named and person_of(s1) == person_of(s2):
            same.append(distance)
        elif named or (s1 == s2 and k1 != k2) or (s1 in NAMED) != (s2 in NAMED):
            different.append(distance)  # two named people, two faces of one photo, a named person and a stranger
    return same, different


NAMED: set[str] = set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=ROOT / ".cache" / "evalset")
    parser.add_argument("--gallery", type=int, default=150, help="photos of the evaluation set added as the rest")
    args = parser.parse_args()
    people = sorted(PEOPLE.glob("*.jpg"))
    if len(people) < 4:
        sys.exit("run scripts/setup.sh --dev first (photos of people in .cache/faces/people)")
    NAMED.update(p.stem for p in people)
    groups = group_photos()
    others = gallery_files(args.set, args.gallery)
    threshold = GatewaySettings().face_match_distance
    with running_stack() as stack:
        faces, describe_s = describe(stack.ports.extractor, people + groups)
        gallery_faces, gallery_describe_s = describe(stack.ports.extractor, others)
        same, different = pair_distances(faces)
        print(f"people: {len(people)} photos of {len({person_of(p.stem) for p in people})} people; group photos: "
              f"{len(groups)}; other photos: {len(others)}; face_match_distance {threshold}")
        for stem, result in faces.items():
            by_eye = FACES_BY_EYE.get(stem, 1)
            print(f"  {stem:<10s} {result.width}x{result.height}: {len(result.faces.faces)} face(s) found, "
                  f"{by_eye} by eye; scores {[round(f.score, 2) for f in result.faces.faces]}")
        print(f"same person: {len(same)} pairs, distances {sorted(round(d, 4) for d in same)}")
        print(f"different people: {len(different)} pairs, min {min(different):.4f}, 1st pct "
              f"{np.percentile(different, 1):.4f}, 5th pct {np.percentile(different, 5):.4f}; within "
              f"{threshold}: {sum(d <= threshold for d in different)}")
        for cut in (0.05, 0.06, 0.07, 0.08, 0.09, 0.1):
            print(f"  at {cut:.2f}: same accepted {sum(d <= cut for d in same)}/{len(same)}, different accepted "
                  f"{sum(d <= cut for d in different)}/{len(different)}")
        client = GatewayClient(stack.http_url, timeout_s=600)
        album, plain = f"faces-{uuid.uuid4().hex[:6]}", f"plain-{uuid.uuid4().hex[:6]}"
        client.create_album(album, faces=True)
        client.create_album(plain)
        uploads = [Upload(p.read_bytes(), p.stem, {"person": person_of(p.stem)} if p in people else {})
                   for p in people + groups + others]
        timings = {}
        for name in (plain, album):
            started = time.perf_counter()
            ids: dict[str, str] = {}
            for start in range(0, len(uploads), 16):
                answer = client.add_images(name, uploads[start:start + 16])
                ids.update({r["name"]: r["id"] for r in answer["results"] if r.get("id")})
            timings[name] = time.perf_counter() - started
        hits_at_1 = hits_at_2 = queries = strangers = 0
        for photo in people:
            answer = client.search_faces(album, image_id=ids[photo.stem], top_k=5)
            names = [r["name"] for r in answer["results"]]
            mates = {p.stem for p in people if person_of(p.stem) == person_of(photo.stem) and p != photo}
            print(f"  {photo.stem:<10s} finds {[(r['name'], round(r['distance'], 4)) for r in answer['results']]}")
            strangers += sum(n not in mates for n in names)
            if mates:
                queries += 1
                hits_at_1 += bool(names[:1]) and names[0] in mates
                hits_at_2 += mates <= set(names[:len(mates)])
        with_faces = sum(1 for r in gallery_faces.values() if r.faces.faces)
        print(f"search by a photo of a person with several: R@1 {hits_at_1}/{queries}, all found first "
              f"{hits_at_2}/{queries}; other people returned within {threshold}: {strangers}")
        print(f"evaluation-set photos with a face found: {with_faces} of {len(others)} (not judged)")
        print(f"cost: DescribeFaces {1000 * describe_s:.0f} ms per photo of people, "
              f"{1000 * gallery_describe_s:.0f} ms per evaluation-set photo; add {len(uploads)} photos: "
              f"{timings[album]:.1f} s with faces against {timings[plain]:.1f} s without "
              f"({timings[album] / timings[plain]:.2f}x)")
        print_json_line({
            "identities_with_several_photos": 1, "photos_of_people": len(people), "group_photos": len(groups),
            "faces_found_groups": sum(len(faces[g.stem].faces.faces) for g in groups),
            "faces_by_eye_groups": sum(FACES_BY_EYE.get(g.stem, 0) for g in groups),
            "same_pairs": len(same), "same_max_distance": round(max(same), 4),
            "different_pairs": len(different), "different_min_distance": round(min(different), 4),
            "face_match_distance": threshold,
            "different_within_threshold": sum(d <= threshold for d in different),
            "same_within_threshold": sum(d <= threshold for d in same),
            "r_at_1": round(hits_at_1 / queries, 3) if queries else None, "strangers_returned": strangers,
            "describe_ms_per_photo": round(1000 * describe_s, 1),
            "describe_ms_per_gallery_photo": round(1000 * gallery_describe_s, 1),
            "add_with_faces_ratio": round(timings[album] / timings[plain], 2),
        })


if __name__ == "__main__":
    main()
