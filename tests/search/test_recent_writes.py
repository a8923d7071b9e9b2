"""Which images a search service wrote lately (services/search/recent_writes.py), on a clock of the test's."""

from __future__ import annotations

from services.search.recent_writes import RecentWrites


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_image_written_within_the_window_is_not_settled_and_is_after_it() -> None:
    clock = Clock()
    recent = RecentWrites(10, clock)
    assert recent.settled("shoes", ["a", "b"])
    recent.wrote("shoes", ["a"])
    assert not recent.settled("shoes", ["a", "b"])
    assert recent.settled("shoes", ["b"])
    assert recent.settled("hats", ["a"])  # another album
    clock.now += 10
    assert not recent.settled("shoes", ["a"])
    clock.now += 0.5
    assert recent.settled("shoes", ["a"])


def test_writing_an_image_again_starts_its_window_again() -> None:
    clock = Clock()
    recent = RecentWrites(10, clock)
    recent.wrote("shoes", ["a", "b"])
    clock.now += 8
    recent.wrote("shoes", ["a"])
    clock.now += 8
    assert recent.settled("shoes", ["b"])
    assert not recent.settled("shoes", ["a"])


def test_an_album_changed_as_a_whole_settles_no_image_within_the_window() -> None:
    clock = Clock()
    recent = RecentWrites(10, clock)
    recent.changed("shoes")
    assert not recent.settled("shoes", ["never-written"])
    assert recent.settled("hats", ["never-written"])
    clock.now += 10.5
    assert recent.settled("shoes", ["never-written"])


def test_images_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    recent = RecentWrites(10, clock)
    for n in range(1000):
        recent.wrote("shoes", [f"img{n}"])
        clock.now += 0.1
    assert len(recent._images["shoes"]) <= 101
    clock.now += 20
    recent.wrote("hats", ["x"])
    assert recent.settled("shoes", ["img999"])
    assert "shoes" not in recent._images


def test_a_window_of_zero_settles_nothing_and_keeps_nothing() -> None:
    recent = RecentWrites(0, Clock())
    recent.wrote("shoes", ["a"])
    assert not recent.settled("shoes", ["b"])
    assert recent._images == {}
