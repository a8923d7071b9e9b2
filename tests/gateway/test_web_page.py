"""The web page in headless Chromium over the real stack: a user's clicks and typing, what the page shows.

Each test leaves a screenshot of the page in build/screenshots/<test name>.png (and under pytest's tmp
dir) for a person to look at.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, Request, Route, ViewportSize, expect, sync_playwright
from redis.asyncio import Redis

from services.devstack import ROOT, Stack
from services.gateway.import_queue import ImportQueue
from services.gateway.usecases import imports
from tests.conftest import SERVERS, SERVICES
from tests.extractor.test_faces import side_by_side
from tests.gateway.stack_helpers import (
    DETAILS,
    circular_detail,
    cropped_copy,
    file_server,
    given_attributes,
    http_server,
    unique_album,
    wait_for_job,
)

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "build" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# The first search of a fresh extractor compiles its model: seconds, not the usual milliseconds.
expect.set_options(timeout=30_000)

COLUMNS = [{"name": "price", "type": "float"}, {"name": "colour", "type": "string"},
           {"name": "sizes", "type": "string_list"}, {"name": "in_stock", "type": "bool"},
           {"name": "listed_at", "type": "timestamp"}, {"name": "note", "type": "string"}]
# Attributes of the six sample photos, in the order of tests.conftest.sample_photos.
ROWS: list[dict[str, object]] = [
    {"price": 30.0, "colour": "red", "sizes": ["41", "42"], "in_stock": True, "listed_at": "2023-06-01T09:30:00Z"},
    {"price": 45.5, "colour": "blue", "sizes": ["42"], "in_stock": True, "listed_at": "2024-03-01"},
    {"price": 60.0, "colour": "red", "sizes": ["43"], "in_stock": True, "listed_at": "2024-05-01"},
    {"price": 20.0, "colour": "green", "sizes": [], "in_stock": False, "listed_at": "2023-01-01"},
    {"price": None, "colour": "blue", "sizes": ["42"], "in_stock": True, "listed_at": None},
    {"price": 49.0, "colour": None, "sizes": ["40"], "in_stock": None, "listed_at": "2024-07-01"},
]


@dataclass(frozen=True)
class Shop:
    """An album with declared columns holding the six sample photos, named by their stems."""

    album: str
    photos: list[Path]

    @property
    def table(self) -> str:
        return f'"{self.album}"'

    def name_of(self, index: int) -> str:
        return self.photos[index].stem


def fill_shop(http: httpx.Client, album: str, photos: list[Path]) -> Shop:
    response = http.post("/v1/albums", json={"name": album, "columns": COLUMNS})
    assert response.status_code == 201, response.text
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    data = {"name": [p.stem for p in photos], "attributes": [json.dumps(a) for a in ROWS]}
    response = http.post(f"/v1/albums/{album}/images", files=files, data=data)
    assert response.status_code == 201, response.text
    return Shop(album, photos)


@pytest.fixture(scope="module")
def shop(_stack: Stack, photos: list[Path]) -> Shop:
    _stack.ensure(SERVERS + SERVICES)
    with httpx.Client(base_url=_stack.http_url, timeout=60) as http:
        return fill_shop(http, unique_album("web"), photos[:len(ROWS)])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --dev installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        yield client


@pytest.fixture()
def page(stack: Stack, browser: Browser, request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """The page, opened in a fresh browser context; its screenshot is taken when the test ends."""
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.http_url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # What the page itself loads (not the API's answers, which a test may make fail) is all there.
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 and "/v1/" not in r.url else None)
    page.goto("/")
    yield page
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    screenshot(page, request.node.name, folder)
    context.close()
    assert not errors, f"the page raised: {errors}"
    assert not missing, f"the page asked for what is not there: {missing}"


def screenshot(page: Page, name: str, folder: Path) -> Path:
    """The whole page, thumbnails loaded, saved in `folder` and in build/screenshots."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    page.wait_for_function("[...document.images].every(i => !i.src || i.complete)", timeout=10_000)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


# --- helpers: what a user sees -------------------------------------------------------------------------


def choose_album(page: Page, shop: Shop) -> None:
    page.locator(f"#album option[value='{shop.album}']").wait_for(state="attached")
    page.select_option("#album", shop.album)
    expect(page.locator("#albumStats")).to_contain_text(f"{len(shop.photos)} images")


def card_names(cards: Locator) -> list[str]:
    return [n.strip() for n in cards.locator(".name").all_inner_texts()]


def card_value(card: Locator, column: str) -> str:
    return card.locator(f".kv[data-column='{column}'] .v").inner_text().strip()


def table_rows(page: Page) -> list[list[str]]:
    rows = page.locator("#sqlOut tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]


def run_sql(page: Page, statement: str) -> None:
    page.fill("#sql", statement)
    page.press("#sql", "Control+Enter")


# --- SQL -----------------------------------------------------------------------------------------------


def test_the_api_docs_render_from_the_gateway_alone(page: Page) -> None:
    """The page's "API docs" link: Swagger UI served by the gateway itself (before, from a CDN: a blank page on a
    machine without internet access). Nothing is fetched from another host."""
    elsewhere: list[str] = []
    page.on("request", lambda r: elsewhere.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:http://127.0.0.1")) else None)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Image search gateway")
    expect(page.locator(".opblock-summary-path").filter(has_text="/v1/albums/{album}/imports").first).to_be_visible()
    assert not elsewhere, elsewhere


def test_sql_select_nearest_to_an_uploaded_image_shows_cards_with_name_price_and_distance(
        page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.set_input_files("#sqlFile", str(shop.photos[1]))
    query = f"image('{shop.photos[1].name}')"
    expect(page.locator("#sqlImageRef")).to_have_text(query)
    page.fill("#sql", f"SELECT name, price, distance FROM {shop.table}\nWHERE price < 50\nORDER BY feature <=> ")
    page.click("#sqlInsertRef")
    page.keyboard.type(" LIMIT 4")
    expect(page.locator("#sql")).to_have_value(re.compile(re.escape(f"<=> {query} LIMIT 4") + "$"))
    page.click("#runSql")

    cards = page.locator("#sqlOut .card")
    expect(cards).to_have_count(4)
    expect(page.locator("#sqlMsg")).to_contain_text("4 rows")
    assert card_names(cards)[0] == shop.name_of(1)
    assert sorted(card_names(cards)) == sorted(shop.name_of(i) for i in (0, 1, 3, 5))  # price < 50
    assert (card_value(cards.first, "price"), card_value(cards.first, "distance")) == ("45.5", "0.0000")
    distances = [card_value(cards.nth(i), "distance") for i in range(4)]
    assert all(re.fullmatch(r"\d\.\d{4}", d) for d in distances) and distances == sorted(distances)
    assert cards.locator(".kv[data-column='name']").count() == 0  # the name is the card's title


def test_an_sql_example_button_stays_the_same_button_when_its_statement_changes(page: Page, shop: Shop) -> None:
    """The examples are drawn again when the album's sample image name arrives, a moment after the album: the
    buttons are kept and given their new statements, so that a click made meanwhile lands on the button aimed at
    (before, every button was replaced, and a click in that moment could land on none: CI saw "count" do nothing)."""
    choose_album(page, shop)
    page.wait_for_function("sampleImageName !== ''")  # the album's own arrived: it does not overwrite the one set here
    page.wait_for_load_state("networkidle")  # nor does a second one (the album chosen again as the listing lands)
    page.evaluate("window.kept = [...document.querySelectorAll('#sqlExamples button')]")
    page.evaluate("sampleImageName = 'another name.jpg'; renderExamples()")
    assert page.evaluate("[...document.querySelectorAll('#sqlExamples button')].every((b, i) => b === window.kept[i])")
    page.get_by_role("button", name="update one image").click()
    expect(page.locator("#sql")).to_have_value(re.compile(r"WHERE name = 'another name\.jpg'$"))


def test_sql_count_and_group_by_are_shown_as_tables(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.get_by_role("button", name="count", exact=True).click()
    expect(page.locator("#sql")).to_have_value(f"SELECT count(*) FROM {shop.table}")
    page.click("#runSql")
    expect(page.locator("#sqlOut th")).to_have_text(["count"])
    assert table_rows(page) == [["6"]]

    run_sql(page, f"SELECT colour, count(*) FROM {shop.table} GROUP BY colour")
    expect(page.locator("#sqlOut th")).to_have_text(["colour", "count"])
    expect(page.locator("#sqlOut tbody tr")).to_have_count(4)
    assert sorted(table_rows(page)) == [["blue", "2"], ["green", "1"], ["red", "2"], ["—", "1"]]
    expect(page.locator("#sqlOut td .null")).to_have_text(["—"])  # the photo without a colour
    assert page.locator("#sqlOut .card").count() == 0


def test_sql_update_reports_how_many_images_changed(page: Page, shop: Shop, http: httpx.Client) -> None:
    choose_album(page, shop)
    run_sql(page, f"UPDATE {shop.table} SET note = 'on sale' WHERE name = '{shop.name_of(2)}'")
    message = page.locator("#sqlMsg")
    expect(message).to_have_class(re.compile(r"\bok\b"))
    expect(message).to_contain_text(f'1 image updated in "{shop.album}"')
    expect(message).to_contain_text(re.compile(r"\d+\.\d ms"))
    listed = http.get(f"/v1/albums/{shop.album}/images", params={"where": "note = 'on sale'"}).json()["images"]
    assert [i["name"] for i in listed] == [shop.name_of(2)]


def test_sql_syntax_error_shows_the_server_message_with_its_position(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    statement = f"SELECT * FROM {shop.table} WHERE price < AND colour = 'red'"
    run_sql(page, statement)
    message = page.locator("#sqlMsg")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(message).to_contain_text(f"syntax error at position {statement.index('AND') + 1} near 'AND'")
    expect(message.locator(".meta")).to_contain_text("invalid_sql · HTTP 400")
    caret = message.locator(".caret").inner_text()
    assert caret.splitlines() == [statement, " " * statement.index("AND") + "^^^"]
    assert page.locator("#sqlOut > *").count() == 0


# --- search --------------------------------------------------------------------------------------------


def test_search_where_filter_shows_only_matching_images_with_their_columns(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.fill("#where", "colour in ('red', 'blue') and in_stock")
    page.set_input_files("#queryFile", str(shop.photos[2]))  # choosing the photo runs the search

    cards = page.locator("#results .card")
    expect(cards).to_have_count(4)
    assert card_names(cards)[0] == shop.name_of(2)
    assert sorted(card_names(cards)) == sorted(shop.name_of(i) for i in (0, 1, 2, 4))
    assert sorted(card_value(cards.nth(i), "colour") for i in range(4)) == ["blue", "blue", "red", "red"]
    first = cards.first
    assert card_value(first, "price") == "60"
    assert card_value(first, "sizes") == "43"
    assert card_value(first, "listed_at") == "1 May 2024"
    assert card_value(first, "distance") == "0.0000" and int(card_value(first, "matches")) > 20


def test_a_result_searched_with_becomes_the_query_read_from_the_album(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.set_input_files("#queryFile", str(shop.photos[2]))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(len(shop.photos))
    chosen = card_names(cards)[1]
    cards.nth(1).locator("button.again").click()
    # the album's image is the query: the others nearest to it, itself left out
    expect(page.locator("#searchMsg")).to_have_text(re.compile(r"^5 results"))
    expect(cards).to_have_count(len(shop.photos) - 1)
    assert chosen not in card_names(cards)
    assert "/content" in (page.locator("#preview").get_attribute("src") or "")
    page.select_option("#mode", "similar")
    page.click("#search")  # the same query, another mode
    expect(cards).to_have_count(len(shop.photos) - 1)
    assert chosen not in card_names(cards)
    page.fill("#where", "price > 1000")
    page.press("#where", "Enter")
    expect(page.locator("#results .empty")).to_have_text("No other image matches the filter.")
    page.fill("#where", "")

    # A box drawn on it searches that part of its bytes (read from the album): itself found first.
    page.select_option("#mode", "copy")
    page.locator("#preview").scroll_into_view_if_needed()
    shown = page.locator("#preview").bounding_box()
    assert shown is not None
    with page.expect_request(lambda r: r.url.split("?")[0].endswith("/search")) as request:
        page.mouse.move(shown["x"] + shown["width"] * 0.1, shown["y"] + shown["height"] * 0.1)
        page.mouse.down()
        page.mouse.move(shown["x"] + shown["width"] * 0.9, shown["y"] + shown["height"] * 0.9, steps=6)
        page.mouse.up()
    assert "region" in parse_qs(urlparse(request.value.url).query)
    expect(page.locator("#searchMsg")).not_to_have_class(re.compile(r"\berror\b"))
    expect(cards.first.locator(".name")).to_have_text(chosen)


def test_search_max_distance_leaves_only_the_nearest_images(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.set_input_files("#queryFile", str(shop.photos[2]))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(len(shop.photos))

    page.fill("#maxDistance", "0.3")
    page.click("#search")
    expect(cards).to_have_count(1)
    assert card_names(cards) == [shop.name_of(2)]
    # "1 result in ..." or, where the photo has regions to propose, "1 result for the whole photo · ..."
    expect(page.locator("#searchMsg")).to_have_text(re.compile(r"^1 result (in|for the whole photo)"))

    page.fill("#where", "price > 1000")
    page.press("#where", "Enter")
    expect(page.locator("#results .empty")).to_have_text("No image matches the filter and within distance 0.3.")
    expect(cards).to_have_count(0)
    page.fill("#where", "")
    page.click("#search")
    expect(cards).to_have_count(1)


def test_a_failed_search_or_another_album_leaves_no_results_of_the_last_search(
        page: Page, shop: Shop, http: httpx.Client, tmp_path: Path) -> None:
    choose_album(page, shop)
    page.set_input_files("#queryFile", str(shop.photos[2]))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(len(shop.photos))

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page.set_input_files("#queryFile", str(broken))
    expect(page.locator("#searchMsg")).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#searchMsg")).to_contain_text("image")
    expect(cards).to_have_count(0)  # not the previous photo's results under the error

    page.set_input_files("#queryFile", str(shop.photos[2]))
    expect(cards).to_have_count(len(shop.photos))
    other = unique_album("web")
    assert http.post("/v1/albums", json={"name": other}).status_code == 201
    page.click("#refresh")
    page.locator(f"#album option[value='{other}']").wait_for(state="attached")
    held: list[Route] = []  # a search of the shop whose answer comes once another album is chosen
    page.route("**/search?*", lambda route: held.append(route))
    page.click("#search")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    page.select_option("#album", other)
    expect(page.locator("#albumStats")).to_contain_text("0 images")
    with page.expect_response(lambda r: "/search?" in r.url):
        held[0].continue_()
    page.unroute("**/search?*")
    page.wait_for_timeout(200)  # the answer handled
    expect(cards).to_have_count(0)  # the shop's results are not this album's
    expect(page.locator("#searchMsg")).to_have_text("")
    page.click("#search")  # the query photo stays: searching it here finds nothing
    expect(page.locator("#results .empty")).to_be_visible()


# --- albums --------------------------------------------------------------------------------------------


def test_deleting_an_album_from_the_page_asks_first(page: Page, http: httpx.Client, empty_album: str,
                                                     photos: list[Path], tmp_path: Path) -> None:
    """The album's Delete… asks, saying what goes; Keep it keeps it; Delete the album deletes it and its images,
    and the page moves to another album."""
    assert http.post(f"/v1/albums/{empty_album}/images",
                     files=[("file", (p.name, p.read_bytes(), "image/png")) for p in photos[:2]]).status_code == 201
    open_album(page, empty_album, 2)
    page.click("#deleteAlbum")
    expect(page.locator("#deleteAlbumText")).to_have_text(
        f'Delete the album "{empty_album}" and its 2 images? Their bytes, vectors, faces and features go with it; '
        "this cannot be undone.")
    screenshot(page, "test_delete_album_confirm", tmp_path)
    page.click("#deleteAlbumNo")
    expect(page.locator("#deleteAlbumConfirm")).to_be_hidden()
    assert http.get(f"/v1/albums/{empty_album}").status_code == 200
    page.click("#deleteAlbum")
    page.click("#deleteAlbumYes")
    expect(page.locator("#createMsg")).to_have_text(f'Album "{empty_album}" deleted, with its 2 images.')
    expect(page.locator(f"#album option[value='{empty_album}']")).to_have_count(0)
    assert page.locator("#album").input_value() != empty_album
    assert http.get(f"/v1/albums/{empty_album}").status_code == 404


def test_creating_an_album_with_declared_columns_from_the_page(page: Page, http: httpx.Client) -> None:
    album = unique_album("web")
    page.click("#create")  # no name: said here (the gateway said "invalid album name ''")
    expect(page.locator("#createMsg")).to_have_text("Name the album: letters, digits, '-' and '_', e.g. holidays.")
    page.fill("#newAlbum", album)
    for name, kind in (("price", "float"), ("colour", "string"), ("tags", "string_list")):
        page.click("#addColumn")
        row = page.locator("#newColumns .column-row").last
        row.locator(".col-name").fill(name)
        row.locator(".col-type").select_option(kind)
    page.click("#addColumn")  # a row left empty is no column
    # The listing of every album is read again after the album is made: held here, the new album is chosen
    # without it (it took seconds with many albums).
    held: list[Route] = []
    page.route("**/v1/albums", lambda route: held.append(route) if route.request.method == "GET"
               else route.continue_())
    page.click("#create")
    try:
        expect(page.locator("#album")).to_have_value(album)
        expect(page.locator("#albumStats")).to_contain_text("0 images")
        for _ in range(100):  # the held listing's request reaches the handler as the page's events are read
            if held:
                break
            page.wait_for_timeout(50)
        assert len(held) == 1
        held[0].continue_()
        page.unroute("**/v1/albums")
        expect(page.locator("#createMsg")).to_have_text(f'Album "{album}" created with 3 columns.')
        expect(page.locator("#album")).to_have_value(album)
        expect(page.locator("#albumColumns .chip")).to_have_text(["price: float", "colour: string",
                                                                  "tags: string_list"])
        expect(page.locator("#newColumns .column-row")).to_have_count(0)
        described = http.get(f"/v1/albums/{album}").json()
        assert described["columns"] == [{"name": "price", "type": "float"}, {"name": "colour", "type": "string"},
                                        {"name": "tags", "type": "string_list"}]
        expect(page.locator("#sqlExamples")).to_contain_text("count by colour")
    finally:
        http.delete(f"/v1/albums/{album}")


def test_an_album_made_to_find_details_from_the_page_finds_the_photo_a_close_up_is_cut_from(
        page: Page, http: httpx.Client, photos: list[Path], tmp_path: Path) -> None:
    album = unique_album("web-details")
    page.fill("#newAlbum", album)
    page.check("#newDetails")
    page.click("#create")
    try:
        expect(page.locator("#createMsg")).to_have_text(f'Album "{album}" created, finding details.')
        expect(page.locator("#albumColumns .chip")).to_have_text(["details"])
        assert http.get(f"/v1/albums/{album}").json()["details"] is True
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
        assert http.post(f"/v1/albums/{album}/images", files=files,
                         data={"name": [p.stem for p in photos]}).status_code == 201
        open_album(page, album, len(photos))
        close_up = tmp_path / "close-up.jpg"
        close_up.write_bytes(circular_detail(next(p for p in photos if p.stem == "astronaut"), DETAILS["astronaut"]))
        page.set_input_files("#queryFile", str(close_up))
        cards = page.locator("#results .card")
        expect(cards.first.locator(".name")).to_have_text("astronaut")
        expect(cards.first).to_contain_text("matches")
        screenshot(page, "test_find_details", tmp_path)
    finally:
        http.delete(f"/v1/albums/{album}")


# --- imports and re-embeds ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _made_albums(_stack: Stack) -> Iterator[list[str]]:
    """The albums the module's tests made, deleted after them all: after each test's screenshot (a test's own
    fixture would delete its album before the page's fixture takes it, the page then saying the album is gone)."""
    made: list[str] = []
    yield made
    _stack.ensure(SERVERS + SERVICES)
    with httpx.Client(base_url=_stack.http_url, timeout=60) as http:
        for album in made:
            http.delete(f"/v1/albums/{album}")


@pytest.fixture()
def empty_album(http: httpx.Client, _made_albums: list[str]) -> str:
    album = unique_album("web-import")
    assert http.post("/v1/albums", json={"name": album}).status_code == 201
    _made_albums.append(album)
    return album


def open_album(page: Page, album: str, images: int) -> None:
    """Reloads the album list (the album was made after the page opened) and shows the album."""
    page.click("#refresh")
    page.locator(f"#album option[value='{album}']").wait_for(state="attached")
    page.select_option("#album", album)
    expect(page.locator("#albumStats")).to_contain_text(re.compile(rf"^{images} images? "))


def thumbnail_names(page: Page) -> list[str]:
    return sorted(page.locator("#newest img").evaluate_all("images => images.map(i => i.alt)"))


@contextmanager
def held_urls(count: int) -> Iterator[list[str]]:
    """URLs of images that answer (404) only at the end of the block, or when the gateway gives up on them
    (GATEWAY_URL_FETCH_TIMEOUT_S, 10 s): import items that keep their batch running."""
    release = threading.Event()

    class Held(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(timeout=60)
            with suppress(OSError):  # the gateway gave up on it
                self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:
            return None

    with http_server(Held) as base:
        try:
            yield [f"{base}/held.png?n={n}" for n in range(count)]
        finally:
            release.set()


def test_importing_a_zip_archive_shows_its_progress_to_done_and_the_new_images(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    archive = tmp_path / "holiday.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for photo in photos[:3]:
            bundle.write(photo, f"holiday/{photo.name}")
    open_album(page, empty_album, 0)
    expect(page.locator("#newest .empty")).to_contain_text("No images yet")
    expect(page.locator("#jobs .empty")).to_have_text("No imports or re-embeds yet.")

    page.set_input_files("#importArchive", str(archive))
    expect(page.locator("#archivePicked")).to_contain_text("holiday.zip")
    page.select_option("#importOnDuplicate", "skip")
    page.click("#startImport")
    expect(page.locator("#importMsg")).to_have_text("Import of holiday.zip started: 3 images queued.")
    job = page.locator("#jobs .job")
    expect(job).to_have_count(1)
    expect(job.locator(".jobtitle")).to_have_text("Archive import · holiday.zip")
    expect(job.locator(".status")).to_have_text("done")
    expect(job.locator(".counts")).to_have_text("3 of 3 · 3 added")
    expect(job.locator(".bar")).to_have_attribute("aria-valuenow", "3")
    expect(job.locator(".speed")).to_contain_text(re.compile(r"images/s · took \d+(\.\d)? s"))
    expect(job.locator(".cancel")).to_be_hidden()

    expect(page.locator("#albumStats")).to_contain_text("3 images")
    expect(page.locator("#newest img")).to_have_count(3)
    assert thumbnail_names(page) == sorted(f"holiday/{p.name}" for p in photos[:3])
    listed = http.get("/v1/imports", params={"album": empty_album}).json()["imports"]
    assert [(j["kind"], j["on_duplicate"], j["source"]) for j in listed] == [("archive", "skip", "holiday.zip")]
    page.reload()  # the page knows what it sent no more: the gateway's record of the job names it
    open_album(page, empty_album, 3)
    expect(page.locator("#jobs .job .jobtitle")).to_have_text("Archive import · holiday.zip")


def answering(status: int, reason: str, answered: list[Route]) -> Callable[[Route], None]:
    """A route handler answering every request with this error (and keeping the requests)."""
    def answer(route: Route) -> None:
        answered.append(route)
        route.fulfill(status=status, content_type="application/json", body=json.dumps(
            {"error": {"reason": reason, "message": f"Answered {status}.", "request_id": "r1"}}))
    return answer


def test_an_import_upload_the_gateway_drops_is_sent_again_until_it_is_taken(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The gateway restarted while it read the upload: the connection cut, then a 502 from a proxy in front of
    it. The page says so, sends the archive again once it answers, and the import runs once; a refusal (413) is
    shown at once, not sent again, nor a proxy's 504 (the gateway may still be staging the upload)."""
    archive = tmp_path / "cut.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for photo in photos[:2]:
            bundle.write(photo, photo.name)
    tries: list[Route] = []

    def drop(route: Route) -> None:
        tries.append(route)
        if len(tries) == 1:
            route.abort("connectionreset")
        elif len(tries) == 2:
            route.fulfill(status=502, body="Bad Gateway")  # the third is held until the test lets it through

    page.route("**/v1/albums/*/imports", drop)
    open_album(page, empty_album, 0)
    page.set_input_files("#importArchive", str(archive))
    page.click("#startImport")
    expect(page.locator("#importMsg")).to_have_text(
        "The upload did not get through (HTTP 502); it is sent again when the gateway answers.")
    expect(page.locator("#startImport")).to_be_disabled()
    page.wait_for_function("() => document.querySelector('#upload') && !document.querySelector('#upload').hidden")
    for _ in range(100):  # the third try comes 2 s after the 502
        if len(tries) == 3:
            break
        page.wait_for_timeout(100)
    assert len(tries) == 3
    screenshot(page, "test_an_import_upload_the_gateway_drops_is_sent_again_waiting",
               tmp_path_factory.getbasetemp() / "screenshots")
    keys = {route.request.headers.get("idempotency-key") for route in tries}
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{32}", keys.pop() or "")  # one import, tried 3 times
    tries[2].continue_()
    expect(page.locator("#importMsg")).to_have_text("Import of cut.zip started: 2 images queued.")
    job = page.locator("#jobs .job")
    expect(job.locator(".status")).to_have_text("done")
    expect(job.locator(".counts")).to_have_text("2 of 2 · 2 added")
    assert len(http.get("/v1/imports", params={"album": empty_album}).json()["imports"]) == 1

    page.unroute("**/v1/albums/*/imports")
    for status, reason in ((413, "too_large"), (504, "gateway_timeout")):  # refused; a proxy gave up waiting
        answered: list[Route] = []
        page.route("**/v1/albums/*/imports", answering(status, reason, answered))
        page.set_input_files("#importArchive", str(archive))
        page.click("#startImport")
        expect(page.locator("#importMsg")).to_contain_text(f"Answered {status}.")
        expect(page.locator("#startImport")).to_be_enabled()
        page.wait_for_timeout(1500)  # a resend would come after 1 s
        assert len(answered) == 1, status
        page.unroute("**/v1/albums/*/imports")


def test_an_upload_stopped_cancels_the_import_the_gateway_made_or_makes_of_it(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path,
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stop during an upload: held before the gateway reads it, the page cancels it by its key, and the gateway,
    reading it after all, makes a cancelled import of it; let through to the gateway (its answer held), the
    import it made is cancelled (or done already) and shown."""
    archive = tmp_path / "stop.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for photo in photos[:3]:
            bundle.write(photo, photo.name)
    held: list[Route] = []
    page.route("**/v1/albums/*/imports", lambda route: held.append(route))  # never let through
    open_album(page, empty_album, 0)
    page.set_input_files("#importArchive", str(archive))
    page.click("#startImport")
    expect(page.locator("#stopUpload")).to_be_visible()
    page.wait_for_function("() => !!stopUpload")
    screenshot(page, f"{request.node.name}-uploading", tmp_path_factory.getbasetemp() / "screenshots")
    page.click("#stopUpload")
    expect(page.locator("#importMsg")).to_have_text(
        "Import of stop.zip stopped. You stopped the upload before the gateway took it: nothing of it is imported.")
    expect(page.locator("#upload")).to_be_hidden()
    expect(page.locator("#startImport")).to_be_enabled()
    key = held[0].request.headers["idempotency-key"]  # the held upload, read by the gateway after all:
    late = http.post(f"/v1/albums/{empty_album}/imports", files={"archive": ("stop.zip", archive.read_bytes())},
                     headers={"Idempotency-Key": key})
    assert late.status_code == 202, late.text
    assert (late.json()["status"], late.json()["total"]) == ("cancelled", 0)

    page.unroute("**/v1/albums/*/imports")
    taken: list[httpx.Response] = []

    def taken_unanswered(route: Route) -> None:  # the gateway takes the upload; its answer never comes back
        taken.append(http.post(f"/v1/albums/{empty_album}/imports", files={
            "archive": ("stop.zip", archive.read_bytes())}, headers={
            "Idempotency-Key": route.request.headers["idempotency-key"]}))

    page.route("**/v1/albums/*/imports", taken_unanswered)
    page.set_input_files("#importArchive", str(archive))
    page.click("#startImport")
    for _ in range(200):
        if taken:
            break
        page.wait_for_timeout(100)
    assert taken and taken[0].status_code == 202
    page.click("#stopUpload")
    expect(page.locator("#importMsg")).to_have_text(re.compile(
        r"^Import of stop\.zip stopped\. You stopped the upload after the gateway had taken it: its import is "
        r"(cancelled|done), \d images? of it added\.$"))
    made = taken[0].json()["id"]
    status = http.get(f"/v1/imports/{made}").json()["status"]
    assert status in ("cancelled", "done")
    expect(page.locator(f"#jobs .job[data-id='{made}'] .status")).to_have_text(status)
    expect(page.locator(f"#jobs .job[data-id='{made}'] .jobtitle")).to_have_text("Archive import · stop.zip")


def test_a_folder_s_part_stopped_midway_is_not_sent_and_the_part_sent_goes_on(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    """Stop while the second of three parts goes up (held before the gateway reads it): that part is cancelled by
    its key, the third is not sent, and the first goes on, the page says so."""
    folder = _trip_folder(tmp_path, photos, 5)
    open_album(page, empty_album, 0)
    page.evaluate("UPLOAD_PART.images = 2")
    taken: list[Route] = []
    held: list[Route] = []

    def first_taken(route: Route) -> None:  # the first part goes through; those after are held, never answered
        if taken:
            held.append(route)
        else:
            taken.append(route)
            route.continue_()

    page.route("**/v1/albums/*/imports", first_taken)
    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    page.click("#startImport")
    for _ in range(300):  # the second part goes up once the first is taken
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the second part was not sent"
    page.wait_for_function("() => !!stopUpload")
    page.click("#stopUpload")
    expect(page.locator("#importMsg")).to_have_text(
        "Import of trip/ stopped at part 2 of 3. You stopped the upload before the gateway took it: nothing of it is "
        "imported. Part 3 of 3 not sent. The part sent goes on; cancel it in the list to stop it too.")
    expect(page.locator("#startImport")).to_be_enabled()
    jobs = http.get("/v1/imports", params={"album": empty_album}).json()["imports"]
    assert [job["source"] for job in jobs] == ["trip.tar (part 1 of 3)"]  # the first goes on
    expect(page.locator(f"#jobs .job[data-id='{jobs[0]['id']}'] .status")).to_have_text("done")
    assert len(held) == 1  # the third part was never sent
    page.wait_for_function("() => { const thumbs = [...document.querySelectorAll('#newest img')];"
                           " return thumbs.length === 2 && thumbs.every(i => i.naturalWidth > 0); }")  # its images


def test_importing_a_folder_sends_its_images_as_one_tar_named_by_path(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "trip"
    long_name = "sub/" + "très-long-nom-" * 8 + ".png"  # past tar's 100 bytes, not ASCII: a pax header
    for path, photo in ((f"sub/{photos[0].name}", photos[0]), (photos[1].name, photos[1]), (long_name, photos[2]),
                        (".hidden.png", photos[3])):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, folder / path)
    (folder / "notes.txt").write_text("not an image")
    manifest = tmp_path / "trip.csv"
    manifest.write_text(f"file,place\n{photos[1].name},harbour\n{long_name},hills\n")
    open_album(page, empty_album, 0)

    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    picked = re.compile(r"^trip/ · 3 images, .* · 2 other files left out$")
    expect(page.locator("#folderPicked")).to_contain_text(picked)
    page.set_input_files("#importManifest", str(manifest))
    page.click("#startImport")
    job = page.locator("#jobs .job")
    expect(job.locator(".jobtitle")).to_have_text("Archive import · trip/")
    expect(job.locator(".status")).to_have_text("done")
    expect(job.locator(".counts")).to_have_text("3 of 3 · 3 added")

    images = {i["name"]: given_attributes(i["attributes"])
              for i in http.get(f"/v1/albums/{empty_album}/images").json()["images"]}
    assert images == {f"sub/{photos[0].name}": {}, photos[1].name: {"place": "harbour"}, long_name: {"place": "hills"}}
    expect(page.locator("#newest img")).to_have_count(3)


def _trip_folder(tmp_path: Path, photos: list[Path], count: int) -> Path:
    folder = tmp_path / "trip"
    folder.mkdir()
    for k, photo in enumerate(photos[:count]):
        shutil.copyfile(photo, folder / f"{k}-{photo.name}")
    return folder


def _import_posts(page: Page) -> list[Request]:
    """The import requests the page sends, kept as they go."""
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/imports") else None)
    return posts


def test_a_large_folder_goes_up_in_parts_an_import_each_two_live_at_most(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    folder = _trip_folder(tmp_path, photos, 5)
    open_album(page, empty_album, 0)
    page.evaluate("UPLOAD_PART.images = 2")  # 1,000 on the page: 5 images then go up in 3 parts
    posts = _import_posts(page)
    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    expect(page.locator("#folderPicked")).to_contain_text(re.compile(r"^trip/ · 5 images, .* · sent in 3 parts$"))
    # Start stays off while parts remain to send, though a part's job ending refreshes the album's view
    page.evaluate("""() => {
      window.startOnWhileSending = 0;
      new MutationObserver(() => { if (sendingParts && !$("startImport").disabled) window.startOnWhileSending++; })
        .observe($("startImport"), { attributes: true });
    }""")
    page.click("#startImport")
    expect(page.locator("#importMsg")).to_have_text("Import of trip/ started in 3 parts: 5 images queued.")
    expect(page.locator("#startImport")).to_be_enabled()
    assert page.evaluate("window.startOnWhileSending") == 0
    jobs = page.locator("#jobs .job")
    expect(jobs).to_have_count(3)
    for k in range(3):
        row = page.locator("#jobs .job", has_text=f"trip/ (part {k + 1} of 3)")
        expect(row.locator(".jobtitle")).to_have_text(f"Archive import · trip/ (part {k + 1} of 3)")
        expect(row.locator(".status")).to_have_text("done")
    assert len(posts) == 3
    listed = sorted(http.get("/v1/imports", params={"album": empty_album}).json()["imports"],
                    key=lambda job: job["created_at_ms"])
    assert [(job["source"], job["counts"]["added"]) for job in listed] == [
        (f"trip.tar (part {k} of 3)", added) for k, added in ((1, 2), (2, 2), (3, 1))]
    assert listed[2]["created_at_ms"] >= listed[0]["finished_at_ms"]  # the third sent once the first was done
    assert http.get(f"/v1/albums/{empty_album}").json()["image_count"] == 5
    expect(page.locator("#newest img")).to_have_count(5)


def test_a_folder_in_parts_sends_each_part_the_manifest_rows_of_its_files(
        page: Page, http: httpx.Client, photos: list[Path], tmp_path: Path, _made_albums: list[str]) -> None:
    album = unique_album("web-import")
    assert http.post("/v1/albums", json={"name": album, "columns": [{"name": "price", "type": "float"}]}
                     ).status_code == 201
    _made_albums.append(album)
    folder = _trip_folder(tmp_path, photos, 5)
    names = sorted(path.name for path in folder.iterdir())
    open_album(page, album, 0)
    page.evaluate("UPLOAD_PART.images = 2")
    posts = _import_posts(page)
    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    page.set_input_files("#importManifest", str(_write(tmp_path / "bad.csv", f"file,price\n{names[4]},cheap\n")))
    page.click("#startImport")
    message = page.locator("#importMsg")
    expect(message).to_contain_text("cheap")  # the whole manifest read first: refused before any part is sent
    expect(message).to_have_class(re.compile(r"\berror\b"))
    page.set_input_files("#importManifest", str(_write(tmp_path / "trip.txt", f"file,price\n{names[4]},5\n")))
    page.click("#startImport")  # its name's suffix says no format the gateway reads
    expect(message).to_contain_text("trip.txt: a manifest is a .csv or .jsonl file")
    assert posts == []

    # rows by a folder above the one sent, and one naming no file: listed by the last part as not found; its
    # format said by its name (a JSONL file's suffix in capitals)
    manifest = "".join(f'{{"file": "{path}", "price": {price}}}\n' for path, price in (
        (f"trip/{names[0]}", 1), (f"trip/{names[4]}", 5), ("lost.png", 9)))
    page.set_input_files("#importManifest", str(_write(tmp_path / "trip.NDJSON", manifest)))
    expect(page.locator("#folderPicked")).to_contain_text("sent in 3 parts")
    page.click("#startImport")
    expect(message).to_contain_text(re.compile(r"^Import of trip/ started in 3 parts: \d images queued\.$"))
    rows = page.locator("#jobs .job")
    expect(rows).to_have_count(3)
    for k in range(3):
        expect(rows.nth(k).locator(".status")).to_have_text("done")
    images = {i["name"]: given_attributes(i["attributes"])
              for i in http.get(f"/v1/albums/{album}/images").json()["images"]}
    assert images == {name: ({"price": 1.0} if k == 0 else {"price": 5.0} if k == 4 else {"price": None})
                      for k, name in enumerate(names)}
    jobs = sorted(http.get("/v1/imports", params={"album": album}).json()["imports"],
                  key=lambda job: job["created_at_ms"])
    assert [job["source"] for job in jobs] == [  # the second part's manifest empty (its files have no row)
        "trip.tar (part 1 of 3) + trip.NDJSON", "trip.tar (part 2 of 3)", "trip.tar (part 3 of 3) + trip.NDJSON"]
    failed = http.get(f"/v1/imports/{jobs[2]['id']}/results", params={"failed": "true"}).json()["results"]
    assert [f["name"] for f in failed] == ["lost.png"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_part_the_gateway_refuses_stops_the_sending_and_says_which_parts_were_not_sent(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    folder = _trip_folder(tmp_path, photos, 5)
    open_album(page, empty_album, 0)
    page.evaluate("UPLOAD_PART.images = 2")
    answered: list[Route] = []
    refuse, posts = answering(413, "too_large", answered), _import_posts(page)
    page.route("**/v1/albums/*/imports", lambda route: refuse(route) if len(posts) == 2 else route.continue_())
    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    page.click("#startImport")
    message = page.locator("#importMsg")
    expect(message).to_have_text("Import of trip/ stopped: parts 2-3 of 3 not sent: answered 413. Choose the folder "
                                  "again to send the rest (its images already added count as duplicates).")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#startImport")).to_be_enabled()
    expect(page.locator("#jobs .job .status")).to_have_text("done")
    assert len(answered) == 1
    assert [job["source"] for job in http.get("/v1/imports", params={"album": empty_album}).json()["imports"]] == [
        "trip.tar (part 1 of 3)"]


def test_a_cancelled_part_cancels_the_part_sent_after_it_and_no_more_are_sent(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    """The first part's state read as cancelled (a real cancel would race the embedding of a 2-image part; the
    gateway's cancel is tested in test_imports.py): the page cancels the second and sends no third."""
    folder = _trip_folder(tmp_path, photos, 5)
    open_album(page, empty_album, 0)
    page.evaluate("UPLOAD_PART.images = 2")
    posts = _import_posts(page)
    first: list[str] = []
    page.on("response", lambda r: first.append(r.json()["id"]) if r.request in posts[:1] and not first else None)
    cancels: list[str] = []
    page.on("request", lambda r: cancels.append(r.url) if r.method == "POST" and r.url.endswith("/cancel") else None)

    def as_cancelled(route: Route) -> None:
        if not first or not route.request.url.endswith(f"/v1/imports/{first[0]}"):
            return route.continue_()
        job = route.fetch().json()
        route.fulfill(json={**job, "status": "cancelled"})
    page.route("**/v1/imports/*", as_cancelled)
    page.click("#tabFolder")
    page.set_input_files("#importFolder", str(folder))
    page.click("#startImport")
    expect(page.locator("#importMsg")).to_have_text("Import of trip/ stopped: part 3 of 3 not sent: part 1 cancelled.")
    assert len(posts) == 2
    listed = {job["source"]: job["id"] for job in http.get("/v1/imports", params={"album": empty_album}).json()[
        "imports"]}
    assert sorted(listed) == ["trip.tar (part 1 of 3)", "trip.tar (part 2 of 3)"]
    second = listed["trip.tar (part 2 of 3)"]
    assert [url.rsplit("/v1/imports/", 1)[1] for url in cancels] == [f"{second}/cancel"]


def test_an_import_of_urls_lists_the_failed_one_with_its_reason(
        page: Page, empty_album: str, photos: list[Path]) -> None:
    page.set_viewport_size({"width": 400, "height": 860})  # a phone: every panel in one column
    open_album(page, empty_album, 0)
    page.click("#tabUrls")
    page.fill("#importUrls", "ftp://example.com/a.png")
    page.click("#startImport")
    message = page.locator("#importMsg")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(message).to_contain_text("'ftp://example.com/a.png' is not an http(s) URL")
    expect(message.locator(".meta")).to_contain_text("invalid_argument · HTTP 400")

    with file_server(photos[0].parent) as base:
        urls = [f"{base}/{p.name}" for p in photos[:2]] + [f"{base}/missing.png"]
        page.fill("#importUrls", "\n".join(urls))
        page.click("#startImport")
        expect(message).to_have_text("Import of 3 URLs started: 3 images queued.")
        job = page.locator("#jobs .job")
        expect(job.locator(".status")).to_have_text("done")
    expect(job.locator(".counts")).to_have_text("3 of 3 · 2 added · 1 failed")
    toggle = job.locator(".show-failures")
    expect(toggle).to_have_text("Show 1 failure")
    toggle.click()
    failure = job.locator(".failure")
    expect(failure).to_have_count(1)
    expect(failure.locator(".fname")).to_have_text("missing.png")
    expect(failure.locator(".reason")).to_have_text("url_fetch_failed")
    expect(failure.locator(".why")).to_have_text(f"{urls[2]} answered HTTP 404")
    expect(toggle).to_have_text("Hide failures")
    expect(page.locator("#albumStats")).to_contain_text("2 images")
    expect(page.locator("#newest img")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # nothing wider than the phone


def test_an_import_that_failed_shows_nothing_imported_and_why_not_a_full_bar(
        page: Page, stack: Stack, http: httpx.Client, empty_album: str) -> None:
    """An import whose gateway stopped while it staged the upload (failed by a worker's sweep), nothing queued. (A
    refused request leaves no import: `test_bad_imports_are_refused_before_anything_is_queued`.)"""
    async def stopped_staging() -> None:  # as the sweep leaves it, in the gateway's own job store
        redis = Redis(port=stack.ports.redis, db=0)
        try:
            queue = ImportQueue(redis)
            job_id = await queue.create(empty_album, "archive", source="holiday.zip")
            assert await queue.fail_staging(job_id, imports.STAGING_STOPPED)
        finally:
            await redis.aclose()

    with ThreadPoolExecutor(1) as aside:  # not in the thread whose event loop Playwright runs
        aside.submit(asyncio.run, stopped_staging()).result()
    open_album(page, empty_album, 0)
    job = page.locator("#jobs .job")
    expect(job.locator(".status")).to_have_text("failed")
    expect(job.locator(".counts")).to_have_text("nothing imported")
    expect(job.locator(".msg")).to_have_text(imports.STAGING_STOPPED)
    assert job.locator(".bar .ok").evaluate("e => e.getBoundingClientRect().width") == 0


def test_an_import_with_more_failures_than_shown_links_to_the_next_page_of_them(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path]) -> None:
    with file_server(photos[0].parent) as base:
        open_album(page, empty_album, 0)
        page.click("#tabUrls")
        page.fill("#importUrls", "\n".join(f"{base}/missing-{n}.png" for n in range(52)))
        page.click("#startImport")
        job = page.locator("#jobs .job")
        expect(job.locator(".status")).to_have_text("done")
    expect(job.locator(".counts")).to_have_text("52 of 52 · 0 added · 52 failed")
    job.locator(".show-failures").click()
    expect(job.locator(".failure")).to_have_count(50)
    expect(job.locator(".failures .muted")).to_have_text("… and 2 more failures: the next ones as JSON")
    link = job.locator(".failures .muted a").get_attribute("href")
    assert link is not None and link.endswith("/results?failed=true&after=49")
    rest = http.get(link).json()
    assert [r["name"] for r in rest["results"]] == ["missing-50.png", "missing-51.png"] and rest["next_after"] is None


def test_cancelling_a_running_import_shows_it_cancelled_with_what_it_did(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    served = tmp_path / "served"
    served.mkdir()
    for n in range(16):
        (served / f"crop-{n:02}.jpg").write_bytes(cropped_copy(photos[n % 4], keep=0.6 + n / 50))
    open_album(page, empty_album, 0)
    with file_server(served) as base, held_urls(48) as held:
        # The first batch of 16 images is added; the three batches of held URLs keep the import running
        # (two workers, 10 s a batch) until it is cancelled.
        urls = [f"{base}/crop-{n:02}.jpg" for n in range(16)] + held
        page.click("#tabUrls")
        page.fill("#importUrls", "\n".join(urls))
        page.click("#startImport")
        job = page.locator("#jobs .job")
        expect(job.locator(".counts")).to_contain_text("16 added")
        expect(job.locator(".status")).to_have_text("running")
        expect(job.locator(".counts")).to_contain_text(re.compile(r"^\d+ of 64 · 16 added"))
        expect(job.locator(".speed")).to_contain_text(re.compile(r"images/s · about .+ left"))
        screenshot(page, f"{request.node.name}-running", tmp_path)
        job.locator(".cancel").click()
        expect(job.locator(".status")).to_have_text("cancelled")
        expect(job.locator(".cancel")).to_be_hidden()
    assert http.get(f"/v1/imports/{job.get_attribute('data-id')}").json()["status"] == "cancelled"
    expect(page.locator("#albumStats")).to_contain_text("16 images")


def test_re_embedding_an_album_from_the_page_runs_to_done_beside_its_import(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    archive = tmp_path / "shoes.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for photo in photos[:3]:
            bundle.write(photo, photo.name)
    created = http.post(f"/v1/albums/{empty_album}/imports", files={"archive": ("shoes.zip", archive.read_bytes())})
    assert wait_for_job(http, created.json()["id"], timeout_s=60)["status"] == "done"
    open_album(page, empty_album, 3)
    expect(page.locator("#jobs .job")).to_have_count(1)

    page.click("#reembed")
    expect(page.locator("#reembedText")).to_contain_text(f'Re-embed the 3 images of "{empty_album}"')
    page.click("#reembedNo")
    expect(page.locator("#reembedConfirm")).to_be_hidden()
    page.click("#reembed")
    expect(page.locator("#reembedDetailsLine")).to_be_visible()
    page.check("#reembedFaces")  # an album made without faces indexes them from this re-embed on
    page.click("#reembedYes")
    expect(page.locator("#reembedConfirm")).to_be_hidden()
    jobs = page.locator("#jobs .job")
    expect(jobs).to_have_count(2)
    reembed = jobs.first
    expect(reembed.locator(".jobtitle")).to_have_text("Re-embed")
    expect(reembed.locator(".status")).to_have_text("done")
    expect(reembed.locator(".counts")).to_have_text("3 of 3 · 3 re-embedded")
    expect(jobs.nth(1).locator(".jobtitle")).to_have_text("Archive import · shoes.zip")  # as the gateway lists it
    expect(page.locator("#albumStats")).to_contain_text("3 images")
    assert http.get("/v1/imports", params={"album": empty_album}).json()["imports"][0]["kind"] == "reembed"
    described = http.get(f"/v1/albums/{empty_album}").json()
    assert (described["faces"], described["details"]) == (True, False)
    expect(page.locator("#albumColumns .chip")).to_have_text(["faces"])
    page.click("#reembed")
    expect(page.locator("#reembedFacesLine")).to_be_hidden()  # it has them now
    expect(page.locator("#reembedDetailsLine")).to_be_visible()


def test_the_album_s_near_duplicates_are_shown_in_groups_within_the_distance_asked(
        page: Page, http: httpx.Client, empty_album: str, photos: list[Path]) -> None:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos[:3]]
    files += [("file", (f"resaved-{p.name}", cropped_copy(p, keep=1.0, quality=90), "application/octet-stream"))
              for p in photos[:2]]
    assert http.post(f"/v1/albums/{empty_album}/images", files=files).status_code == 201
    open_album(page, empty_album, 5)
    page.click("#findDupes")
    groups = page.locator("#dupes .group")
    expect(groups).to_have_count(2)
    message = page.locator("#dupesMsg")
    expect(message).to_contain_text("2 groups of near-duplicates (4 images) within distance")
    names = sorted(sorted(group.locator("img").evaluate_all("images => images.map(i => i.alt)"))
                   for group in groups.all())
    assert names == sorted(sorted([p.name, f"resaved-{p.name}"]) for p in photos[:2])
    expect(groups.first.locator(".hint")).to_contain_text(re.compile(r"^2 images · each within 0\.\d{4} of another$"))

    page.fill("#dupeDistance", "0")
    page.press("#dupeDistance", "Enter")
    expect(message).to_have_text("No near-duplicates within distance 0.")
    expect(groups).to_have_count(0)
    page.fill("#dupeDistance", "5")
    page.click("#findDupes")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(message).to_contain_text("max_distance must be between 0 and 2")
    page.fill("#dupeDistance", "")
    page.click("#findDupes")
    expect(groups).to_have_count(2)


def test_adding_images_from_the_page_counts_them_and_shows_them_newest_first(
        page: Page, empty_album: str, photos: list[Path], tmp_path: Path) -> None:
    open_album(page, empty_album, 0)
    page.set_input_files("#addFiles", [str(p) for p in photos[:2]])
    expect(page.locator("#addPicked")).to_contain_text("2 images")
    page.click("#add")
    expect(page.locator("#addMsg")).to_have_text("2 added, 0 duplicate(s), 0 failed.")
    expect(page.locator("#albumStats")).to_contain_text("2 images")
    expect(page.locator("#newest img")).to_have_count(2)
    assert thumbnail_names(page) == sorted(p.name for p in photos[:2])

    resaved = tmp_path / f"resaved-{photos[0].stem}.jpg"  # the same photo saved again: a near-duplicate
    resaved.write_bytes(cropped_copy(photos[0], keep=1.0, quality=90))
    page.set_input_files("#addFiles", str(resaved))
    page.select_option("#addOnDuplicate", "skip")
    page.click("#add")
    expect(page.locator("#addMsg")).to_have_text(
        f"0 added, 0 duplicate(s), 1 skipped (near-duplicate), 0 failed.\n"
        f"• {resaved.name}: not added, a near-duplicate of an image of the album")
    expect(page.locator("#albumStats")).to_contain_text("2 images")

    broken = tmp_path / "broken.jpg"  # a failure keeps the files chosen, to send again once mended
    broken.write_bytes(b"not an image")
    page.set_input_files("#addFiles", str(broken))
    page.click("#add")
    expect(page.locator("#addMsg")).to_contain_text("0 added, 0 duplicate(s), 1 failed.\n• broken.jpg: ")
    expect(page.locator("#addMsg")).not_to_contain_text("broken.jpg: image 'broken.jpg'")
    expect(page.locator("#addPicked")).to_contain_text("broken.jpg")
    page.click("#add")
    expect(page.locator("#addMsg")).to_contain_text("1 failed.")


# --- recognise -----------------------------------------------------------------------------------------


def test_recognise_shows_the_label_its_confidence_and_the_nearest_labelled_images(
        page: Page, shop: Shop, http: httpx.Client, tmp_path: Path) -> None:
    choose_album(page, shop)
    query = tmp_path / "query.jpg"
    query.write_bytes(cropped_copy(shop.photos[2]))
    expected = http.post(f"/v1/albums/{shop.album}/recognize", params={"label": "colour", "evidence": 6},
                         files={"file": ("query.jpg", query.read_bytes(), "image/jpeg")}).json()
    page.set_input_files("#queryFile", str(query))  # runs a search first, as ever
    expect(page.locator("#results .card")).not_to_have_count(0)
    assert page.locator("#labelColumns option[value='colour']").count() == 1  # the declared string columns

    page.fill("#recognizeLabel", "colour")
    page.click("#recognize")
    box = page.locator("#recognition")
    expect(box).to_be_visible()
    expect(box.locator(".label")).to_have_text(expected["label"] or "unknown")
    top = expected["candidates"][0]
    expect(box.locator(".confidence")).to_contain_text(f"{round(top['confidence'] * 100)} %")
    expect(box.locator(".why")).to_contain_text(f"unknown below {expected['threshold']:.2f}")
    cards = box.locator(".card")
    expect(cards).to_have_count(len(expected["evidence"]))
    assert card_names(cards) == [e["name"] for e in expected["evidence"]]
    assert card_names(cards)[0] == shop.name_of(2) and card_value(cards.first, "colour") == "red"
    expect(page.locator("#results .card")).to_have_count(0)
    expect(page.locator("#searchMsg")).to_contain_text("5 labelled images")
    screenshot(page, "test_recognise_answer", tmp_path)  # the answer; the test's own screenshot shows the error

    page.fill("#recognizeLabel", "nothing_here")
    page.press("#recognizeLabel", "Enter")
    expect(page.locator("#searchMsg")).to_contain_text("no image of album")
    expect(box).to_be_hidden()


def test_find_by_word_shows_the_images_tagged_with_its_label_and_their_scores(
        page: Page, shop: Shop, http: httpx.Client, tmp_path: Path) -> None:
    choose_album(page, shop)
    expected = http.get(f"/v1/albums/{shop.album}/images", params={"tag": "Egyptian cat"}).json()["images"]
    assert [image["name"] for image in expected] == [shop.name_of(1)]  # chelsea, the cat
    page.fill("#browseWord", "egyptian cat")
    page.press("#browseWord", "Enter")
    cards = page.locator("#browseResults .card")
    expect(cards).to_have_count(1)
    assert card_names(cards) == [shop.name_of(1)]
    tags = cards.first.locator(".kvs").first.locator(".kv .k").all_inner_texts()
    assert tags == expected[0]["attributes"]["tags"] and tags[0] == "Egyptian cat"
    assert card_value(cards.first, "Egyptian cat") == f"{expected[0]['attributes']['tag_scores'][0]:.2f}"
    assert card_value(cards.first, "colour") == "blue"  # its attributes below its tags
    expect(page.locator("#browseMsg")).to_contain_text("1 image tagged")
    page.locator("#browsePanel").scroll_into_view_if_needed()
    screenshot(page, "test_find_by_word", tmp_path)
    page.fill("#browseWord", "no-such-word")
    page.click("#browse")
    expect(page.locator("#browseResults .empty")).to_contain_text("no-such-word")


def test_browsing_an_album_filters_orders_and_pages_through_every_image(
        page: Page, shop: Shop, http: httpx.Client, tmp_path: Path) -> None:
    choose_album(page, shop)
    page.click("#browseAll")  # every image, newest first
    cards = page.locator("#browseResults .card")
    newest = http.get(f"/v1/albums/{shop.album}/images", params={"order_by": "created_at", "desc": "true"}).json()
    expect(cards).to_have_count(len(shop.photos))
    assert card_names(cards) == [image["name"] for image in newest["images"]]
    expect(page.locator("#browseMsg")).to_have_text(f"{len(shop.photos)} of {len(shop.photos)} images")
    expect(page.locator("#browseMore")).to_be_hidden()

    page.fill("#browseWhere", "price < 50")  # a filter and a declared column's order, as the API answers them
    page.select_option("#browseOrder", "price desc")
    page.click("#browse")
    cheap = http.get(f"/v1/albums/{shop.album}/images",
                     params={"where": "price < 50", "order_by": "price", "desc": "true"}).json()["images"]
    assert [image["attributes"]["price"] for image in cheap] == [49.0, 45.5, 30.0, 20.0]
    expect(page.locator("#browseMsg")).to_have_text("4 of 4 images matching price < 50")
    assert card_names(cards) == [image["name"] for image in cheap]
    assert [card_value(cards.nth(i), "price") for i in range(4)] == ["49", "45.5", "30", "20"]
    page.select_option("#browseOrder", "price")  # a new order shows at once
    expect(cards.first.locator(".kv[data-column='price'] .v")).to_have_text("20")
    page.locator("#browsePanel").scroll_into_view_if_needed()
    screenshot(page, "test_browse", tmp_path)
    with page.expect_download() as download:  # every image it shows, as JSON lines, by id
        page.click("#browseExport")
    assert download.value.suggested_filename == f"{shop.album}.jsonl"
    lines = Path(download.value.path()).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == sorted(image["id"] for image in cheap)

    page.fill("#browseWhere", "")  # "price ↓": the dearest first, the image without a price last
    page.select_option("#browseOrder", "price desc")
    page.click("#browse")
    expect(cards).to_have_count(len(shop.photos))
    dearest = http.get(f"/v1/albums/{shop.album}/images",
                       params={"order_by": "price", "desc": "true", "nulls": "last"}).json()["images"]
    assert card_names(cards) == [image["name"] for image in dearest] and dearest[-1]["attributes"].get("price") is None
    assert card_value(cards.first, "price") == "60"

    page.fill("#browseWhere", "price <")  # refused by the gateway: its message, no cards
    page.press("#browseWhere", "Enter")
    expect(page.locator("#browseMsg.error")).to_contain_text("where")
    expect(cards).to_have_count(0)

    many = unique_album("browse")  # more than a page: "More" adds the next one
    assert http.post("/v1/albums", json={"name": many}).status_code == 201
    files = [("file", (f"n{i:02d}.png", noise_png(i), "image/png")) for i in range(50)]
    assert http.post(f"/v1/albums/{many}/images", files=files).status_code == 201
    page.reload()
    page.locator(f"#album option[value='{many}']").wait_for(state="attached")
    page.select_option("#album", many)
    page.select_option("#browseOrder", "name")
    page.click("#browse")
    expect(cards).to_have_count(48)
    expect(page.locator("#browseMsg")).to_have_text("48 of 50 images")
    page.click("#browseMore")
    expect(cards).to_have_count(50)
    assert card_names(cards) == [f"n{i:02d}.png" for i in range(50)]
    expect(page.locator("#browseMsg")).to_have_text("50 of 50 images")
    expect(page.locator("#browseMore")).to_be_hidden()
    cards.first.locator(".name").click()  # deleted from its details: counted out of what Browse shows
    page.click("#imgDelete")
    page.click("#imgDeleteYes")
    expect(cards).to_have_count(49)
    expect(page.locator("#browseMsg")).to_have_text("49 of 49 images")
    page.select_option("#album", shop.album)  # another album leaves nothing of this one
    expect(cards).to_have_count(0)


def test_a_csv_manifest_s_undeclared_columns_are_noted_before_the_import(page: Page, shop: Shop) -> None:
    """A CSV manifest's cells are text: its columns the album does not declare are said before anything is sent
    (a filter would compare them as text); declared ones, and a JSONL manifest (typed values), say nothing."""
    choose_album(page, shop)
    note = page.locator("#manifestNote")
    page.set_input_files("#importManifest", files=[{"name": "stock.csv", "mimeType": "text/csv",
                                                    "buffer": b"file,price,colour\na.png,1,red\n"}])
    expect(page.locator("#manifestPicked")).to_contain_text("stock.csv")
    expect(note).to_be_hidden()
    page.set_input_files("#importManifest", files=[{"name": "stock.jsonl", "mimeType": "application/json",
                                                    "buffer": b'{"file": "a.png", "weight": 2}\n'}])
    expect(page.locator("#manifestPicked")).to_contain_text("stock.jsonl")
    expect(note).to_be_hidden()
    page.set_input_files("#importManifest", files=[{"name": "stock.csv", "mimeType": "text/csv",
                                                    "buffer": b'file,name,price,weight,"in stock"\na.png,A,1,2,y\n'}])
    # Not "in stock": no column may be named so (it stays an attribute whatever the album declares).
    expect(note).to_have_text(f"{shop.album} declares no column weight: those cells are stored as text, "
                              "which filters compare as text. An album created with them as typed columns stores "
                              "them typed.")


def noise_png(seed: int, side: int = 48) -> bytes:
    """A small image of random pixels, unlike any other seed's."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- a box on the query photo --------------------------------------------------------------------------


def two_photos_side_by_side(left: Path, right: Path, side: int = 320) -> bytes:
    """Two of the album's photos, each squashed to side x side, in one JPEG (2 side x side)."""
    canvas = Image.new("RGB", (2 * side, side))
    for i, path in enumerate((left, right)):
        with Image.open(path) as image:
            canvas.paste(image.convert("RGB").resize((side, side)), (i * side, 0))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_a_box_drawn_on_the_query_photo_searches_that_part_and_moving_or_resizing_it_searches_again(
        page: Page, shop: Shop, tmp_path: Path) -> None:
    choose_album(page, shop)
    query = tmp_path / "street.jpg"
    query.write_bytes(two_photos_side_by_side(shop.photos[1], shop.photos[2]))  # the cat left, the coffee right
    page.set_input_files("#queryFile", str(query))
    cards = page.locator("#results .card")
    expect(cards).not_to_have_count(0)
    page.locator("#preview").evaluate("e => e.scrollIntoView({block: 'center'})")  # all of it in the window

    def at(x: float, y: float) -> tuple[float, float]:
        """Where a pixel of the photo is on the screen now (the panels above it may have grown meanwhile: the
        album's newest thumbnails loading moved it down between two drags)."""
        shown = page.locator("#preview").bounding_box()
        assert shown is not None
        scale = shown["width"] / 640  # screen pixels per photo pixel
        return shown["x"] + x * scale, shown["y"] + y * scale

    def drag(start: tuple[float, float], end: tuple[float, float]) -> list[int]:
        """Drags with the mouse; the region of the search it starts."""
        with page.expect_request(lambda r: r.url.split("?")[0].endswith("/search")) as request:
            page.mouse.move(*start)
            page.mouse.down()
            page.mouse.move(*end, steps=6)
            page.mouse.up()
        return [int(v) for v in parse_qs(urlparse(request.value.url).query)["region"][0].split(",")]

    x, y, w, h = drag(at(20, 20), at(300, 300))  # draw a box on the cat
    assert abs(x - 20) <= 2 and abs(y - 20) <= 2 and abs(w - 280) <= 3 and abs(h - 280) <= 3
    expect(page.locator("#regionInfo")).to_contain_text(f"{x},{y},{w},{h} (x,y,w,h) of the 640×320 photo")
    expect(cards.first.locator(".name")).to_have_text(shop.name_of(1))

    moved = drag(at(160, 160), at(480, 160))  # move it onto the coffee
    assert abs(moved[0] - 340) <= 3 and moved[2:] == [w, h]
    expect(cards.first.locator(".name")).to_have_text(shop.name_of(2))

    handle = page.locator("#regionBox .nw").bounding_box()
    assert handle is not None
    resized = drag((handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2), at(400, 80))
    assert resized[0] + resized[2] == moved[0] + moved[2] and resized[2] < w  # the opposite corner stayed
    expect(page.locator("#regionText")).to_contain_text(",".join(map(str, resized)))
    expect(cards.first.locator(".name")).to_have_text(shop.name_of(2))
    screenshot(page, "test_region_box", tmp_path)

    with page.expect_request(lambda r: r.url.split("?")[0].endswith("/search")) as whole:
        page.click("#clearRegion")  # the whole photo again
    assert "region" not in whole.value.url
    expect(page.locator("#regionBox")).to_be_hidden()
    expect(page.locator("#regionInfo")).to_be_hidden()


# --- regions the search proposes ------------------------------------------------------------------------


def two_photos_apart(left: Path, right: Path) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """Two of the album's photos 300 px wide, far apart on a 900x420 light ground; each one's box."""
    canvas = Image.new("RGB", (900, 420), (236, 233, 226))
    boxes = []
    for i, path in enumerate((left, right)):
        with Image.open(path) as image:
            photo = image.convert("RGB")
            photo.thumbnail((300, 300))
            canvas.paste(photo, (60 + 480 * i, 60))
            boxes.append((60 + 480 * i, 60, photo.width, photo.height))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=92)
    return out.getvalue(), boxes


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter = width * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_a_search_proposes_regions_on_the_photo_and_a_click_on_one_shows_its_results(
        page: Page, shop: Shop, tmp_path: Path) -> None:
    choose_album(page, shop)
    content, boxes = two_photos_apart(shop.photos[1], shop.photos[2])  # the cat left, the coffee right
    query = tmp_path / "table.jpg"
    query.write_bytes(content)
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/search")) as answered:
        page.set_input_files("#queryFile", str(query))
    assert "proposals=3" in answered.value.url
    regions = [(r["region"]["x"], r["region"]["y"], r["region"]["width"], r["region"]["height"])
               for r in answered.value.json()["regions"]]
    drawn = page.locator("#queryFrame .proposal-box")
    expect(drawn).to_have_count(len(regions))
    expect(page.locator("#proposalTabs")).to_be_visible()
    expect(page.locator("#proposalTabs button[aria-pressed=true]")).to_have_text("Whole photo")
    cards = page.locator("#results .card")
    expect(cards).not_to_have_count(0)
    whole = card_names(cards)
    expect(page.locator("#searchMsg")).to_contain_text("for the whole photo")

    for photo, box in ((2, boxes[1]), (1, boxes[0])):  # a click on each photo's region shows that photo first
        index = max(range(len(regions)), key=lambda i: overlap(regions[i], box))
        assert overlap(regions[index], box) >= 0.5, regions
        drawn.nth(index).click()
        expect(drawn.nth(index)).to_have_class(re.compile("chosen"))
        expect(page.locator("#searchMsg")).to_contain_text(f"for region {index + 1}")
        expect(cards.first.locator(".name")).to_have_text(shop.name_of(photo))
        if photo == 2:
            screenshot(page, "test_region_proposals", tmp_path)

    page.click("#proposalTabs button[data-proposal='-1']")  # the whole photo's results again, no new search
    expect(page.locator("#queryFrame .proposal-box.chosen")).to_have_count(0)
    assert card_names(cards) == whole


# --- faces ---------------------------------------------------------------------------------------------

PEOPLE = ROOT / ".cache" / "faces" / "people"


def test_find_this_person_boxes_the_query_face_and_each_photo_of_that_person(
        page: Page, http: httpx.Client, photos: list[Path], tmp_path: Path) -> None:
    """An album created with faces from the page; a portrait finds the album's photos of that person."""
    people = {p.stem: p for p in PEOPLE.glob("*.jpg")}
    assert {"obama", "obama2", "obama3", "biden"} <= set(people), "run scripts/setup.sh --dev (photos of people)"
    album = unique_album("webfaces")
    page.fill("#newAlbum", album)
    page.check("#newFaces")
    page.click("#create")
    expect(page.locator("#createMsg")).to_contain_text("indexing faces")
    chosen = [people["obama"], people["obama2"], people["biden"], photos[2]]
    added = http.post(f"/v1/albums/{album}/images", files=[("file", (p.name, p.read_bytes())) for p in chosen],
                      data={"name": [p.stem for p in chosen],
                            "attributes": [json.dumps({"person": n}) for n in ("obama", "obama", "biden", "")]})
    assert added.status_code == 201, added.text
    page.click("#refresh")
    page.select_option("#album", album)
    expect(page.locator("#albumColumns .chip", has_text="faces")).to_be_visible()
    expect(page.locator("#findPerson")).to_be_enabled()

    page.set_input_files("#queryFile", str(people["obama3"]))  # a search for copies runs first, as ever
    expect(page.locator("#searchMsg")).to_contain_text("result")
    page.click("#findPerson")
    expect(page.locator("#searchMsg")).to_contain_text("2 photos of this person")
    query_box = page.locator("#queryFrame .face-box")
    expect(query_box).to_have_count(1)
    expect(query_box).to_have_class(re.compile("chosen"))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(2)  # the person's photos only: the copy search's results are gone
    expect(page.locator("#results .card.face")).to_have_count(2)
    assert sorted(card_names(cards)) == ["obama", "obama2"]
    expect(cards.locator(".face-box")).to_have_count(2)
    frame, face = cards.first.locator("a").bounding_box(), cards.first.locator(".face-box").bounding_box()
    assert frame and face and frame["x"] <= face["x"] and face["x"] + face["width"] <= frame["x"] + frame["width"] + 1
    assert card_value(cards.first, "person") == "obama"
    screenshot(page, "test_find_this_person", tmp_path)

    page.fill("#recognizeLabel", "person")
    page.check("#byFace")
    page.click("#recognize")
    expect(page.locator("#recognition .label")).to_have_text("obama")
    expect(page.locator("#searchMsg")).to_contain_text("by the face boxed on the photo")
    expect(query_box).to_have_count(1)  # the face recognised
    expect(query_box).to_have_attribute("title", "the face recognised")

    # The options: how many labelled images a recognition shows, and below what it answers unknown.
    page.click("#options summary")
    page.fill("#evidence", "2")
    page.fill("#threshold", "0.95")
    page.click("#recognize")
    expect(page.locator("#recognition .why")).to_contain_text("unknown below 0.95")
    expect(page.locator("#recognition .evidence .card")).to_have_count(2)

    # A box drawn around one person of a picture of two: the face is looked for there, and boxed where it is.
    two = tmp_path / "two.jpg"
    two.write_bytes(side_by_side(people["obama3"].read_bytes(), people["biden"].read_bytes()))
    page.set_input_files("#queryFile", str(two))
    expect(page.locator("#searchMsg")).to_contain_text("result")
    page.locator("#preview").evaluate("e => e.scrollIntoView({block: 'center'})")
    natural = page.locator("#preview").evaluate("e => [e.naturalWidth, e.naturalHeight]")
    left_width = natural[0] - round(Image.open(people["biden"]).width * natural[1] / Image.open(people["biden"]).height)
    shown = page.locator("#preview").bounding_box()
    assert shown is not None
    scale = shown["width"] / natural[0]
    with page.expect_response(lambda r: "/search?" in r.url and "region=" in r.url):
        page.mouse.move(shown["x"] + (left_width + 4) * scale, shown["y"] + 4 * scale)
        page.mouse.down()
        page.mouse.move(shown["x"] + (natural[0] - 4) * scale, shown["y"] + (natural[1] - 4) * scale, steps=6)
        page.mouse.up()
    page.click("#findPerson")
    expect(page.locator("#searchMsg")).to_contain_text("1 photo of this person in the box")
    expect(query_box).to_have_count(1)
    face = query_box.bounding_box()
    assert face and face["x"] >= shown["x"] + left_width * scale  # in the right half, where the box is
    assert card_names(page.locator("#results .card")) == ["biden"]
    screenshot(page, "test_find_this_person_in_a_box", tmp_path)
    page.fill("#faceDistance", "0.0001")
    page.click("#findPerson")
    expect(page.locator("#searchMsg")).to_contain_text("0 photos of this person in the box (face distance ≤ 0.0001)")
    page.fill("#faceDistance", "")
    page.click("#clearRegion")

    page.set_input_files("#queryFile", str(photos[2]))  # no face in it: a clear message, no result
    expect(page.locator("#searchMsg")).to_contain_text("result")
    page.click("#findPerson")
    expect(page.locator("#searchMsg")).to_contain_text("no face found")
    expect(page.locator("#queryFrame .face-box")).to_have_count(0)

    # An image's details box its faces; a click on one finds that person, the image the query.
    page.locator("#newest .thumb[title='obama']").click()
    expect(page.locator("#imgFacesNote")).to_have_text("1 face: click it to find that person")
    expect(page.locator("#imgFrame .face-box")).to_have_count(1)
    screenshot(page, "test_image_details_faces", tmp_path)
    page.locator("#imgFrame .face-box").click()
    expect(page.locator("#imageDialog")).not_to_be_visible()
    expect(page.locator("#searchMsg")).to_contain_text("1 photo of this person")
    assert card_names(page.locator("#results .card")) == ["obama2"]  # the other photo: the query's own is left out
    page.locator("#newest .thumb[title='biden']").click()
    page.locator("#imgFrame .face-box").click()
    expect(page.locator("#results .empty")).to_have_text("No other photo of this album shows this person.")
    assert http.delete(f"/v1/albums/{album}").status_code == 200


def test_an_image_s_details_change_its_name_and_attributes_and_delete_it(
        page: Page, http: httpx.Client, photos: list[Path], tmp_path: Path) -> None:
    """A card or thumbnail opens the image: typed fields for the album's columns, the others as JSON; what is
    saved is what the form changed, the cards showing it redrawn; bad input is refused with nothing changed;
    a delete asks first, then leaves no card of the image."""
    shop = fill_shop(http, unique_album("webedit"), photos[:len(ROWS)])
    page.click("#refresh")
    choose_album(page, shop)
    name = shop.name_of(1)
    page.set_input_files("#queryFile", str(shop.photos[1]))
    result = page.locator("#results .card", has_text=name).first
    expect(result).to_be_visible()
    result.locator("a").click()
    dialog = page.locator("#imageDialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#imgTitle")).to_have_text(name)
    expect(page.locator("#imgField-price")).to_have_value("45.5")
    expect(page.locator("#imgField-colour")).to_have_value("blue")
    expect(page.locator("#imgField-in_stock")).to_have_value("true")
    expect(page.locator("#imgField-sizes")).to_have_value("42")
    expect(page.locator("#imgFacts")).to_contain_text("content hash")
    image_id = result.get_attribute("data-image-id")
    before = http.get(f"/v1/albums/{shop.album}/images/{image_id}").json()

    # Refused, nothing changed: other attributes that are not an object; a value the album's column cannot take.
    others = page.input_value("#imgOthers")
    assert json.loads(others)["tags"] == before["attributes"]["tags"]  # the network's labels: not declared
    page.fill("#imgOthers", "[1, 2]")
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_contain_text("a JSON object is needed")
    page.fill("#imgOthers", json.dumps({**json.loads(others), "price": 8}))  # a column has its own field
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_contain_text("Other attributes: price has its own field above.")
    page.fill("#imgOthers", others)
    page.fill("#imgField-listed_at", "last tuesday")
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_contain_text("listed_at")
    expect(page.locator("#imgMsg")).to_have_class(re.compile("error"))
    assert http.get(f"/v1/albums/{shop.album}/images/{image_id}").json() == before

    page.fill("#imgField-listed_at", "2024-03-01")
    page.fill("#imgName", "renamed")
    page.fill("#imgField-price", "39.5")
    page.select_option("#imgField-in_stock", "false")
    page.fill("#imgField-sizes", "41, 42")
    page.fill("#imgField-note", "on sale")
    page.fill("#imgOthers", json.dumps({**json.loads(others), "shelf": 4}))
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_have_text("Saved: name, price, sizes, in_stock, note, shelf.")
    after = http.get(f"/v1/albums/{shop.album}/images/{image_id}").json()
    assert after["name"] == "renamed"
    assert {k: after["attributes"][k] for k in ("price", "colour", "sizes", "in_stock", "note", "shelf")} == {
        "price": 39.5, "colour": "blue", "sizes": ["41", "42"], "in_stock": False, "note": "on sale", "shelf": 4}
    # Not changed: the same time written as a date; the network's labels kept.
    assert {k: after["attributes"][k] for k in ("listed_at", "tags")} == {
        k: before["attributes"][k] for k in ("listed_at", "tags")}
    screenshot(page, "test_image_details", tmp_path)
    # Closing with unsaved changes says so first; closing again leaves them.
    page.fill("#imgField-note", "half typed")
    page.keyboard.press("Escape")
    expect(page.locator("#imgMsg")).to_have_text("Unsaved changes: Save them, or close again to leave them.")
    expect(dialog).to_be_visible()
    page.click("#imgClose")
    expect(dialog).not_to_be_visible()
    assert http.get(f"/v1/albums/{shop.album}/images/{image_id}").json()["attributes"]["note"] == "on sale"
    card = page.locator(f"#results .card[data-image-id='{image_id}']")
    expect(card.locator(".name")).to_have_text("renamed")
    assert (card_value(card, "price"), card_value(card, "note")) == ("39.5", "on sale")
    expect(page.locator(f"#newest .thumb[data-image-id='{image_id}']")).to_have_attribute("title", "renamed")
    card.locator(".name").click()  # the name opens the image as well as its picture
    expect(page.locator("#imgTitle")).to_have_text("renamed")
    page.keyboard.press("Escape")
    expect(dialog).not_to_be_visible()

    # Only what the form changed is sent: an empty list shown as an empty field stays a list; a number field
    # holding what is not a number is refused, not stored as none.
    other = http.get(f"/v1/albums/{shop.album}/images", params={"where": f"name = '{shop.name_of(3)}'"}).json()
    (other_image,) = other["images"]
    assert other_image["attributes"]["sizes"] == []
    page.locator(f"#newest .thumb[data-image-id='{other_image['id']}']").click()
    expect(page.locator("#imgField-sizes")).to_have_value("")
    page.click("#imgField-price")
    page.keyboard.press("Control+A")
    page.keyboard.type("1e")
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_contain_text("price is a float column: what is typed is not a number")
    page.fill("#imgField-price", "20")
    page.fill("#imgName", "green one")
    page.click("#imgSave")
    expect(page.locator("#imgMsg")).to_have_text("Saved: name.")
    stored = http.get(f"/v1/albums/{shop.album}/images/{other_image['id']}").json()
    assert (stored["name"], stored["attributes"]["sizes"], stored["attributes"]["price"]) == ("green one", [], 20.0)
    page.keyboard.press("Escape")

    # A delete asks first; then the image is gone from the album and from the page.
    page.locator(f"#newest .thumb[data-image-id='{image_id}']").click()
    page.click("#imgDelete")
    expect(page.locator("#imgConfirm")).to_be_visible()
    page.click("#imgDeleteNo")
    expect(page.locator("#imgConfirm")).to_be_hidden()
    assert http.get(f"/v1/albums/{shop.album}/images/{image_id}").status_code == 200
    page.click("#imgDelete")
    page.click("#imgDeleteYes")
    expect(dialog).not_to_be_visible()
    expect(page.locator("#albumMsg")).to_have_text("Deleted renamed.")
    expect(page.locator("#albumStats")).to_contain_text(f"{len(ROWS) - 1} images")
    expect(page.locator(f"[data-image-id='{image_id}']")).to_have_count(0)
    assert http.get(f"/v1/albums/{shop.album}/images/{image_id}").status_code == 404
    assert http.delete(f"/v1/albums/{shop.album}").status_code == 200
