"""Local features and geometric verification, on real photos (scikit-image's samples)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.local_features import (
    FeatureConfig,
    LocalFeatures,
    LocalFeaturesError,
    Match,
    best_match,
    match,
    nearest_two,
    plausible_affine,
    verified_order,
)
from services.extractor.keypoints import describe_image as describe_with
from services.extractor.preprocess import PreprocessConfig
from services.gateway.settings import GatewaySettings
from tests.conftest import sample_photos

CONFIG = FeatureConfig(side=384, max_keypoints=500)
# What the gateway counts as a verified copy by default.
MIN_MATCHES = GatewaySettings().verify_min_matches


def describe_image(data: bytes, config: FeatureConfig, mirrored: bool = False) -> list[LocalFeatures]:
    return describe_with(data, PreprocessConfig(), config, mirrored)


def jpeg(image: Image.Image, quality: int = 60) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def edited(path: Path, mirror: bool = False) -> bytes:
    """Cropped to 70 %, turned 15 degrees, shrunk to 3/4 and recompressed: a hard copy to find."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    rgb = rgb.crop((int(w * 0.2), int(h * 0.1), int(w * 0.9), int(h * 0.8))).rotate(15, expand=True)
    rgb = rgb.resize((rgb.width * 3 // 4, rgb.height * 3 // 4))
    if mirror:
        rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return jpeg(rgb, 50)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    # astronaut, chelsea, coffee, motorcycle: photos with texture enough to find a 70 % crop by
    # (rocket.jpg, mostly sky, keeps ~16 matches under this edit)
    return [p for p in sample_photos() if p.stem in ("astronaut", "chelsea", "coffee", "motorcycle_left")]


@pytest.fixture(scope="module")
def album(photos: list[Path]) -> list[LocalFeatures]:
    return [describe_image(p.read_bytes(), CONFIG)[0] for p in photos]


def test_an_edited_copy_matches_its_original_by_dozens_of_keypoints_and_no_other_photo(
        photos: list[Path], album: list[LocalFeatures]) -> None:
    for index, path in enumerate(photos):
        query = describe_image(edited(path), CONFIG, mirrored=True)
        counts = [best_match(query, stored).inliers for stored in album]
        assert counts[index] >= 40, (path.name, counts)
        assert max(c for i, c in enumerate(counts) if i != index) < MIN_MATCHES, (path.name, counts)


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255)])
def test_a_photo_turned_with_filled_corners_matches_its_original_and_no_unrelated_photo(fill: tuple[int, ...]) -> None:
    # The straight edges of the fill give many query keypoints the same nearest keypoint in any
    # image; counted many to one they made 20-42 "matches" on unrelated photos (astronaut, camera).
    data = {p.name: p.read_bytes() for p in sample_photos(extra=("moon.png", "camera.png", "horse.png"))}
    with Image.open(io.BytesIO(data["coffee.png"])) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    turned = rgb.crop((w // 10, h // 10, w * 9 // 10, h * 9 // 10)).rotate(12, expand=True, fillcolor=fill)
    query = describe_image(jpeg(turned, 80), CONFIG, mirrored=True)
    counts = {name: best_match(query, describe_image(d, CONFIG)[0]).inliers for name, d in data.items()}
    assert counts.pop("coffee.png") >= 40
    assert len(counts) >= 8
    assert max(counts.values()) < MIN_MATCHES, counts


def test_the_two_nearest_descriptors_and_their_distances_are_exact() -> None:
    rng = np.random.default_rng(0)
    query = rng.integers(0, 256, (300, 128)).astype(np.float32)
    candidate = rng.integers(0, 256, (200, 128)).astype(np.float32)
    candidate[7] = query[0]  # an exact match: distance 0
    nearest, distance = nearest_two(query, candidate)
    exact = np.linalg.norm(query[:, None, :].astype(np.float64) - candidate[None, :, :], axis=2)
    expected = np.argsort(exact, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(nearest, expected)
    np.testing.assert_allclose(distance, np.take_along_axis(exact, expected, axis=1), rtol=1e-6)
    assert nearest[0, 0] == 7 and distance[0, 0] == 0


def test_only_an_affine_map_an_edit_could_make_is_plausible() -> None:
    turn = np.deg2rad(30)
    rotate_and_shrink = 0.5 * np.array([[np.cos(turn), -np.sin(turn), 10], [np.sin(turn), np.cos(turn), -4]])
    assert plausible_affine(rotate_and_shrink)
    assert plausible_affine(np.array([[1.5, 0, 0], [0, 1.0, 0]]))  # stretched 1.5x
    assert plausible_affine(np.array([[3.0, 0, 0], [0, 3.0, 0]]))  # a small crop, magnified
    assert not plausible_affine(np.array([[-1.0, 0, 0], [0, 1.0, 0]]))  # mirrored
    assert not plausible_affine(np.array([[1.0, 0, 0], [0, 0.1, 0]]))  # squeezed flat
    assert not plausible_affine(np.array([[1.0, 1.0, 0], [1.0, 1.0, 0]]))  # collapsed onto a line
    assert not plausible_affine(np.array([[40.0, 0, 0], [0, 40.0, 0]]))  # a few pixels blown up


def test_a_mirrored_copy_is_matched_through_the_mirrored_query_features(
        photos: list[Path], album: list[LocalFeatures]) -> None:
    upright, mirrored = describe_image(edited(photos[0], mirror=True), CONFIG, mirrored=True)
    assert match(upright, album[0]).inliers < 15
    assert match(mirrored, album[0]).inliers >= 30
    assert best_match([upright, mirrored], album[0]).inliers >= 30


def test_features_are_capped_and_survive_serialisation(photos: list[Path]) -> None:
    features = describe_image(photos[0].read_bytes(), CONFIG)[0]
    assert 100 <= len(features) <= CONFIG.max_keypoints
    assert max(features.width, features.height) == CONFIG.side
    again = LocalFeatures.from_bytes(features.to_bytes())
    assert np.array_equal(again.points, features.points)
    assert np.array_equal(again.descriptors, features.descriptors)
    assert (again.width, again.height) == (features.width, features.height)


def test_features_serialised_one_after_the_other_are_read_back_in_order(photos: list[Path]) -> None:
    upright, mirrored = describe_image(photos[1].read_bytes(), CONFIG, mirrored=True)
    both = LocalFeatures.all_from_bytes(upright.to_bytes() + mirrored.to_bytes())
    assert [np.array_equal(a.points, b.points) for a, b in zip(both, (upright, mirrored), strict=True)] == [True] * 2
    assert LocalFeatures.all_from_bytes(b"") == []
    with pytest.raises(LocalFeaturesError):
        LocalFeatures.all_from_bytes(upright.to_bytes() + b"LF1")


@pytest.mark.parametrize("data", [b"", b"LF1\0", b"something else entirely", b"LF1\0\x05\0\0\0\0\0\0\0"])
def test_bytes_that_are_not_features_are_refused(data: bytes) -> None:
    with pytest.raises(LocalFeaturesError):
        LocalFeatures.from_bytes(data)


def test_a_flat_image_has_no_keypoints_and_matches_nothing(album: list[LocalFeatures]) -> None:
    flat = describe_image(jpeg(Image.new("RGB", (300, 200), (90, 120, 200))), CONFIG)[0]
    assert len(flat) == 0
    assert LocalFeatures.from_bytes(flat.to_bytes()).descriptors.shape == (0, 128)
    assert match(flat, album[0]).inliers == 0
    assert match(album[0], flat).inliers == 0


def test_verified_candidates_come_first_most_matches_first_the_rest_keep_their_order() -> None:
    matches = [Match(3, 50), Match(40, 60), Match(0, 0), Match(25, 200), Match(19, 100)]
    assert verified_order(matches, min_inliers=20) == [1, 3, 0, 2, 4]
    assert verified_order([Match(1, 3), Match(2, 3), Match(3, 3)], min_inliers=20) == [0, 1, 2]
    assert verified_order([], min_inliers=20) == []


def test_few_inliers_verify_only_as_most_of_the_tentative_matches() -> None:
    assert Match(20, 400).verified(6)  # confident, whatever the share
    assert Match(8, 12).verified(6)  # a small image's copy: few keypoints, most in the fit
    assert not Match(8, 40).verified(6)  # a chance fit: a few of many tentative matches
    assert not Match(5, 5).verified(6)
    assert not Match(25, 30).verified(30)  # a higher threshold holds for confident counts too
    assert verified_order([Match(9, 60), Match(7, 10)], min_inliers=6) == [1, 0]
