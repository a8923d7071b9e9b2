"""The HTTP API against its own OpenAPI document: a bounded schemathesis run over the real stack.

Every operation of `/openapi.json` is called with generated requests, valid and invalid (schemathesis'
examples, coverage, fuzzing and stateful phases; a fixed number of examples, derandomized), and every
response is checked: not a server error, a documented status code, content type, headers and body, no
slower than a deadline, invalid requests refused, undeclared methods answered 405 with `Allow`, valid
requests not refused by the request validation. Path parameters lean toward a known album with declared
columns and real photos, filters toward its columns and uploads toward its photos, so that requests reach
the search, filter and storage code and not only the 404s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode, HookContext, Response
from schemathesis.engine import events, from_schema
from schemathesis.engine.recorder import ScenarioRecorder
from schemathesis.schemas import BaseSchema

from services.devstack import Stack
from tests.conftest import SERVERS, SERVICES
from tests.gateway.stack_helpers import unique_album

pytestmark = pytest.mark.stack

# Fuzzing examples per operation; the coverage phase adds its boundary cases and the stateful phase its
# sequences (linked operations) on top. The whole file takes about two minutes on two cores.
MAX_EXAMPLES = 20
SEED = 20240531
# The deadline of one request: a slower answer fails the run (max_response_time). The slowest calls here,
# creating an album and re-embedding one, take 2-4 s; the transport gives up at twice the deadline.
RESPONSE_DEADLINE_S = 15.0
REQUEST_TIMEOUT_S = 2 * RESPONSE_DEADLINE_S
COLUMNS = [{"name": "price", "type": "float"}, {"name": "colour", "type": "string"}]
ATTRIBUTES: list[dict[str, Any]] = [{"price": 10.0, "colour": "red"}, {"price": 25.5, "colour": "blue"},
              {"price": 99.0, "colour": "red"}, {"price": None, "colour": "green", "in_stock": True}]
# Filters in both forms, text (where=) and JSON (filter=), over the known album's columns.
WHERES = ["price < 50", "colour in ('red', 'blue') and price >= 10", "price is null", "not (colour = 'red')",
          "attributes.in_stock = true", "name like 'c%'", "price between 1 and 30 or colour = 'green'"]
FILTERS = ['{"price": {"lt": 50}}', '{"colour": {"in": ["red", "blue"]}}', '{"colour": "green"}',
           '{"price": {"gte": 10, "lte": 30}}', '{"in_stock": true}']
COLUMN_NAMES = ["price", "colour", "name", "created_at", "id", "content_hash"]
ADD_IMAGES, SEARCH = "POST /v1/albums/{album}/images", "POST /v1/albums/{album}/search"
GROUPS = "GET /v1/albums/{album}/images/groups"
UPDATES = ("PATCH /v1/albums/{album}/images", "PATCH /v1/albums/{album}/images/{image_id}")


@dataclass(frozen=True)
class Albums:
    """The albums of the run: `known` keeps its images (their attributes may change); `doomed` is there
    to be deleted, `pruned` to be re-embedded and emptied by filter, `plucked` to lose its image by id."""

    known: str
    known_ids: list[str]
    doomed: str
    pruned: str
    plucked: str
    plucked_ids: list[str]

    def sql(self) -> list[str]:
        """Statements over the known album that leave its images in place."""
        album = f'"{self.known}"'
        return [f"SELECT name, price, colour FROM {album} WHERE price < 50 ORDER BY price",
                f"SELECT colour, count(*) FROM {album} GROUP BY colour",
                f"SELECT count(*) FROM {album} WHERE colour = 'red' or attributes.in_stock",
                f"UPDATE {album} SET colour = 'red' WHERE price > 1000"]


def _album(http: httpx.Client, photos: list[Path], attributes: list[dict[str, Any]]) -> tuple[str, list[str]]:
    name = unique_album("schema")
    assert http.post("/v1/albums", json={"name": name, "columns": COLUMNS}).status_code == 201
    if not photos:
        return name, []
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    data = {"name": [p.stem for p in photos], "attributes": [json.dumps(a) for a in attributes]}
    response = http.post(f"/v1/albums/{name}/images", files=files, data=data)
    assert response.status_code == 201, response.text
    return name, [r["id"] for r in response.json()["results"]]


@pytest.fixture(scope="module")
def albums(_stack: Stack, photos: list[Path]) -> Iterator[Albums]:
    """The run's albums; every album the run leaves behind (its own and those it created) is deleted after."""
    _stack.ensure(SERVERS + SERVICES)
    with httpx.Client(base_url=_stack.http_url, timeout=60) as http:
        before = {a["name"] for a in http.get("/v1/albums").json()["albums"]}
        known, known_ids = _album(http, photos[:4], ATTRIBUTES)
        doomed, _ = _album(http, [], [])
        pruned, _ = _album(http, photos[4:5], ATTRIBUTES[1:2])
        plucked, plucked_ids = _album(http, photos[5:6], ATTRIBUTES[2:3])
        yield Albums(known, known_ids, doomed, pruned, plucked, plucked_ids)
        for album in http.get("/v1/albums").json()["albums"]:
            if album["name"] not in before:
                http.delete(f"/v1/albums/{album['name']}")


def _bind(dictionary: str, probability: float) -> dict[str, Any]:
    return {"dictionary": dictionary, "probability": probability}


def _operation(label: str, **config: Any) -> dict[str, Any]:
    return {"include-name": label, **config}


def schemathesis_config(albums: Albums) -> schemathesis.Config:
    """What to generate and check: every phase, every check but positive_data_acceptance (see
    `request_valid_by_the_document_passes_validation`), values leaning toward the run's albums."""
    values = {"known": [albums.known], "known_ids": albums.known_ids, "doomed": [albums.doomed],
              "pruned": [albums.pruned], "plucked": [albums.plucked], "plucked_ids": albums.plucked_ids,
              "missing": ["no-such-album"], "wheres": WHERES, "filters": FILTERS, "columns": COLUMN_NAMES,
              "statements": albums.sql()}
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "request-timeout": REQUEST_TIMEOUT_S,
        "continue-on-failure": True,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"positive_data_acceptance": {"enabled": False}, "max_response_time": RESPONSE_DEADLINE_S},
        "dictionaries": {name: {"values": entries} for name, entries in values.items()},
        "parameters": {
            "path.album": _bind("known", 0.75),
            "path.image_id": _bind("known_ids", 0.6),
            # One filter form at a time is the common case (both at once is a 400, also worth a few).
            "query.where": _bind("wheres", 0.35),
            "query.filter": _bind("filters", 0.35),
            "query.order_by": _bind("columns", 0.6),
            "body.where": _bind("wheres", 0.35),
            "body.filter": _bind("filters", 0.35),
            "body.image_id": _bind("known_ids", 0.5),
            "body.statement": _bind("statements", 0.5),
        },
        "operations": [
            # Destructive operations work only on albums made for them (schemathesis would otherwise fill the
            # album from names it saw in responses, the known album's among them).
            _operation("DELETE /v1/albums/{album}", parameters={"path.album": _bind("doomed", 1.0)}),
            _operation("DELETE /v1/albums/{album}/images", parameters={"path.album": _bind("pruned", 1.0)}),
            _operation("DELETE /v1/albums/{album}/images/{image_id}", parameters={
                "path.album": _bind("plucked", 1.0), "path.image_id": _bind("plucked_ids", 0.6)}),
            # A re-embed takes seconds (every image through the extractor again): a few, on a small album.
            _operation("POST /v1/albums/{album}/reembed", parameters={"path.album": _bind("pruned", 1.0)},
                       generation={"max-examples": 5}),
            # Each album created takes seconds (a Milvus collection and its indexes).
            _operation("POST /v1/albums", generation={"max-examples": 5}),
            # A job fetches its URLs in the background, from wherever they point: fuzzed jobs go to an album
            # that does not exist, so that the body's validation and the 404 are checked and nothing is
            # fetched. (The coverage phase's fixed boundary values reach albums it created, with the URL "",
            # refused before any fetch.)
            _operation("POST /v1/albums/{album}/jobs", parameters={"path.album": _bind("missing", 1.0)}),
        ],
    })


@schemathesis.check
def request_valid_by_the_document_passes_validation(ctx: CheckContext, response: Response, case: Case) -> None:
    """A request the document calls valid is not refused by the gateway's request validation (its 422
    `invalid_argument`). This is positive_data_acceptance narrowed to what a JSON schema can say: that check
    wants every schema-valid request accepted, but a filter's grammar, a column that must exist, an SQL
    statement or "exactly one of file, url, image_id" are rules no JSON schema states, and their documented
    400/404/409/422 answers (each with its own reason) are part of the contract."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE or response.status_code != 422:
        return
    try:
        reason = response.json()["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        return
    if reason == "invalid_argument":
        raise AssertionError(f"a request valid by the document failed the request validation: {response.text}")


def _is_file(value: object) -> bool:
    """A generated file part: schemathesis draws text or bytes for an octet-stream string."""
    return isinstance(value, bytes | str)


def _with_photo(body: dict[str, Any], photo: bytes, search: bool) -> dict[str, Any]:
    """The body with a real photo for its (first) file, as valid or invalid as it was: only a generated
    file is replaced, a search's optional file also added, and a search's url or image_id left out (to make
    the photo the query) only where it is valid."""
    files = body.get("file")
    if search and (files is None or _is_file(files)):
        kept = {k: v for k, v in body.items() if k not in ("url", "image_id") or not isinstance(v, str | None)}
        return {**kept, "file": photo}
    if not search and isinstance(files, list) and files and all(_is_file(f) for f in files):
        return {**body, "file": [photo, *files[1:]]}
    return body


def _with_columns(body: dict[str, Any]) -> dict[str, Any]:
    """An update that sets no attribute made to set the declared columns (valid values: as valid as it was)."""
    if body.get("attributes", {}) == {}:
        return {**body, "attributes": {"colour": "blue", "price": 12.5}}
    return body


def _label(context: HookContext) -> str:
    operation = context.operation
    return f"{operation.method.upper()} {operation.path}" if operation is not None else ""


@pytest.fixture()
def api_schema(stack: Stack, albums: Albums, photos: list[Path]) -> BaseSchema:
    schema = schemathesis.openapi.from_url(f"{stack.http_url}/openapi.json", config=schemathesis_config(albums))
    photo = photos[0].read_bytes()

    @schema.hook("flatmap_body")
    def real_photos_and_changes(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
        """Uploads and searches mostly carry a real photo (the known album's own: a duplicate when added), so
        that they reach the extractor and the index, not only the decoder's refusal; updates that set no
        attribute mostly set the declared columns (False, Hypothesis' simplest draw, picks the change)."""
        label = _label(context)
        if not isinstance(body, dict) or label not in (ADD_IMAGES, SEARCH, *UPDATES):
            return st.just(body)
        change = _with_columns if label in UPDATES else lambda b: _with_photo(b, photo, label == SEARCH)
        return st.booleans().map(lambda generated: body if generated else change(body))

    @schema.hook("flatmap_query")
    def group_by_columns(context: HookContext, query: Any) -> st.SearchStrategy[Any]:
        """Most groupings are by columns the album has (a list of strings stays one)."""
        by = query.get("by") if isinstance(query, dict) else None
        if _label(context) != GROUPS or not isinstance(by, list) or not all(isinstance(b, str) for b in by):
            return st.just(query)
        return st.sampled_from([{**query, "by": ["colour"]}, {**query, "by": ["price", "colour"]}, query])

    return schema


def _answer(recorder: ScenarioRecorder, case_id: str) -> str:
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    if not isinstance(response, Response):
        return "no response"
    return f"[{response.status_code}] {response.content[:400].decode('utf-8', 'replace')}"


def _failures(recorder: ScenarioRecorder) -> Iterator[str]:
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                yield (f"{recorder.label}: {check.name}: {failure.title}\n  {failure.message}\n"
                       f"  {_answer(recorder, case_id)}\n  {check.failure_info.code_sample}")


def test_every_response_is_documented_and_none_is_a_server_error(api_schema: BaseSchema) -> None:
    failures: dict[str, None] = {}
    for event in from_schema(api_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            failures.update(dict.fromkeys(_failures(event.recorder)))
        elif isinstance(event, events.NonFatalError):
            failures[f"{event.label}: {event.info.title}: {event.info}"] = None
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)
