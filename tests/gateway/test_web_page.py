"""The web page in headless Chromium over the real stack: a user's clicks and typing, what the page shows.

Each test leaves a screenshot of the page in build/screenshots/<test name>.png (and under pytest's tmp
dir) for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect, sync_playwright

from services.devstack import ROOT, Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album

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
    page.goto("/")
    yield page
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    screenshot(page, request.node.name, folder)
    context.close()
    assert not errors, f"the page raised: {errors}"


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


def test_search_max_distance_leaves_only_the_nearest_images(page: Page, shop: Shop) -> None:
    choose_album(page, shop)
    page.set_input_files("#queryFile", str(shop.photos[2]))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(len(shop.photos))

    page.fill("#maxDistance", "0.3")
    page.click("#search")
    expect(cards).to_have_count(1)
    assert card_names(cards) == [shop.name_of(2)]
    expect(page.locator("#searchMsg")).to_contain_text("1 result in")

    page.fill("#where", "price > 1000")
    page.press("#where", "Enter")
    expect(page.locator("#results .empty")).to_have_text("No image matches the filter and within distance 0.3.")
    expect(cards).to_have_count(0)
    page.fill("#where", "")
    page.click("#search")
    expect(cards).to_have_count(1)


# --- albums --------------------------------------------------------------------------------------------


def test_creating_an_album_with_declared_columns_from_the_page(page: Page, http: httpx.Client) -> None:
    album = unique_album("web")
    page.fill("#newAlbum", album)
    for name, kind in (("price", "float"), ("colour", "string"), ("tags", "string_list")):
        page.click("#addColumn")
        row = page.locator("#newColumns .column-row").last
        row.locator(".col-name").fill(name)
        row.locator(".col-type").select_option(kind)
    page.click("#addColumn")  # a row left empty is no column
    page.click("#create")
    try:
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
