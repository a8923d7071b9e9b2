"""A small HTTP client of the gateway's public API, used by the command line and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# Results read a request at a time (the gateway's most).
RESULTS_PAGE = 10_000


def shown_name(path: Path) -> str:
    """A file's name as text to send (a name in bytes that are not UTF-8 has them replaced)."""
    return os.fsencode(path.name).decode("utf-8", "replace")


class ApiError(Exception):
    """The gateway answered with an error body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Upload:
    """One image to add: its bytes, the name to store it under, and its attributes."""

    content: bytes
    name: str
    attributes: dict[str, Any] | None = None

    @classmethod
    def from_path(cls, path: Path, attributes: dict[str, Any] | None = None) -> Upload:
        return cls(path.read_bytes(), path.name, attributes)


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, error.get("reason", ""), error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:200]) from None


class GatewayClient:
    """Albums, images and search over the gateway's HTTP API."""

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        _raise_for_error(response)
        return response.json()

    def list_albums(self) -> list[dict[str, Any]]:
        return list(self._json(self.http.get("/v1/albums"))["albums"])

    def album(self, album: str) -> dict[str, Any]:
        """The album; ApiError 404 album_not_found when there is none."""
        return dict(self._json(self.http.get(f"/v1/albums/{album}")))

    def get_album(self, album: str) -> dict[str, Any] | None:
        """The album, or None when there is none."""
        try:
            return self.album(album)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create_album(self, album: str, columns: Sequence[dict[str, str]] = (), faces: bool = False,
                     details: bool = False) -> dict[str, Any]:
        """Creates an album, with declared columns ([{"name": "price", "type": "float"}, ...]) if given, that
        indexes the faces of its images if `faces` and keeps a keypoint index of them if `details`."""
        body = {"name": album, "columns": list(columns), "faces": faces, "details": details}
        return dict(self._json(self.http.post("/v1/albums", json=body)))

    def ensure_album(self, album: str) -> dict[str, Any]:
        return self.get_album(album) or self.create_album(album)

    def sql(self, statement: str, files: dict[str, bytes] | None = None, delete_all: bool = False) -> dict[str, Any]:
        """Runs one SQL statement; `files` are the images it names as image('name'), by name."""
        if not files:
            body = {"statement": statement, "delete_all": delete_all}
            return dict(self._json(self.http.post("/v1/sql", json=body)))
        parts = [("file", (name, content, "application/octet-stream")) for name, content in files.items()]
        data = {"statement": statement, "delete_all": "true" if delete_all else "false"}
        return dict(self._json(self.http.post("/v1/sql", data=data, files=parts)))

    def delete_album(self, album: str) -> None:
        self._json(self.http.delete(f"/v1/albums/{album}"))

    def reembed(self, album: str, faces: bool = False, details: bool = False) -> dict[str, Any]:
        """Starts re-embedding the album with the extractor's current model (or answers the one under way);
        with `faces`, the album indexes faces from now on and the re-embed finds those of its images; with
        `details`, likewise for a keypoint index."""
        return dict(self._json(self.http.post(f"/v1/albums/{album}/reembed",
                                              params={"faces": faces, "details": details})))

    def add_images(self, album: str, uploads: Sequence[Upload]) -> dict[str, Any]:
        """Adds a batch; the answer lists each image as added, duplicate or failed (with why)."""
        files = [("file", (u.name, u.content, mimetypes.guess_type(u.name)[0] or "application/octet-stream"))
                 for u in uploads]
        data: dict[str, list[str]] = {"name": [u.name for u in uploads]}
        if any(u.attributes for u in uploads):
            data["attributes"] = [json.dumps(u.attributes or {}) for u in uploads]
        response = self.http.post(f"/v1/albums/{album}/images", files=files, data=data)
        if response.status_code == 422 and "results" in response.json():
            return dict(response.json())  # every image failed; the body says why, image by image
        return dict(self._json(response))

    def list_images(self, album: str, limit: int = 50, after: str = "", where: str | None = None,
                    order_by: str | None = None, tag: str | None = None, desc: bool = False,
                    offset: int = 0, nulls: str | None = None) -> dict[str, Any]:
        """A page of the album's images (by id after `after`, or ordered by a column, `desc` the largest first,
        from `offset`; only those tagged with `tag`'s labels if given)."""
        params: dict[str, Any] = {"limit": limit, "after": after}
        if desc:
            params["desc"] = True
        if nulls:
            params["nulls"] = nulls
        if offset:
            params["offset"] = offset
        if tag is not None:  # an empty word is the gateway's to refuse
            params["tag"] = tag
        if where:
            params["where"] = where
        if order_by:
            params["order_by"] = order_by
        return dict(self._json(self.http.get(f"/v1/albums/{album}/images", params=params)))

    def export_images(self, album: str, where: str | None = None, tag: str | None = None) -> Iterator[str]:
        """Every image matching `where` (and tagged with `tag`'s labels) as a JSON line, by id, read as the gateway
        streams them (albums of any size); a download cut short raises httpx's RemoteProtocolError."""
        params = {"where": where} if where else {}
        if tag is not None:  # an empty word is the gateway's to refuse
            params["tag"] = tag
        with self.http.stream("GET", f"/v1/albums/{album}/export", params=params) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_error(response)
            yield from response.iter_lines()

    def count_images(self, album: str, where: str | None = None) -> int:
        """How many images the album has, or how many match `where`."""
        params = {"where": where} if where else {}
        return int(self._json(self.http.get(f"/v1/albums/{album}/images/count", params=params))["count"])

    def group_images(self, album: str, by: Sequence[str], where: str | None = None) -> dict[str, Any]:
        """How many (matching) images have each combination of the columns' values, most first."""
        params: dict[str, Any] = {"by": list(by), **({"where": where} if where else {})}
        return dict(self._json(self.http.get(f"/v1/albums/{album}/images/groups", params=params)))

    def start_import(self, album: str, *, archive: Path | None = None, urls: Sequence[str] = (),
                     manifest: Path | None = None, attributes: dict[str, Any] | None = None,
                     on_duplicate: str = "keep", idempotency_key: str = "", timeout_s: float = 3600.0,
                     archive_name: str = "") -> dict[str, Any]:
        """Queues an import (an archive of images, URLs, a manifest); answers once it is staged. The same
        `idempotency_key` on each try of one import: the gateway answers a try after one it queued with that.
        `archive_name`: what the import is listed as (default: the archive file's name)."""
        data = {"urls": "\n".join(urls), "attributes": json.dumps(attributes or {}), "on_duplicate": on_duplicate}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with contextlib.ExitStack() as files:
            parts: list[tuple[str, tuple[str, Any, str]]] = []
            if archive is not None:
                parts.append(("archive", (archive_name or shown_name(archive), files.enter_context(open(archive, "rb")),
                                          "application/octet-stream")))
            if manifest is not None:
                parts.append(("manifest", (shown_name(manifest), files.enter_context(open(manifest, "rb")),
                                           "text/plain")))
            if not parts:
                return dict(self._json(self.http.post(f"/v1/albums/{album}/imports", timeout=timeout_s, json={
                    "urls": list(urls), "attributes": attributes or {}, "on_duplicate": on_duplicate},
                    headers=headers)))
            return dict(self._json(self.http.post(f"/v1/albums/{album}/imports", data=data, files=parts,
                                                  timeout=timeout_s, headers=headers)))

    def get_import(self, import_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.get(f"/v1/imports/{import_id}")))

    def import_results(self, import_id: str, failed_only: bool = False) -> Iterator[dict[str, Any]]:
        """Every result (or failure) of the import, read a page at a time."""
        params: dict[str, Any] = {"failed": failed_only, "limit": RESULTS_PAGE}
        while True:
            answer = self._json(self.http.get(f"/v1/imports/{import_id}/results", params=params))
            yield from answer["results"]
            if answer.get("next_after") is None:
                return
            params["after"] = answer["next_after"]

    def list_imports(self, album: str | None = None) -> list[dict[str, Any]]:
        params = {"album": album} if album else {}
        return list(self._json(self.http.get("/v1/imports", params=params))["imports"])

    def cancel_import(self, import_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.post(f"/v1/imports/{import_id}/cancel")))

    def cancel_import_by_key(self, album: str, idempotency_key: str, timeout_s: float | None = None
                             ) -> dict[str, Any] | None:
        """Cancels the import an import request with this key made, or makes later (an upload stopped midway): the
        import, cancelled (or as it ended), or None if none was made yet."""
        answer = self._json(self.http.post(f"/v1/albums/{album}/imports/cancel", json={
            "idempotency_key": idempotency_key}, timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s))
        return None if answer["import"] is None else dict(answer["import"])

    def search(
        self,
        album: str,
        *,
        image: bytes | None = None,
        url: str | None = None,
        image_id: str | None = None,
        top_k: int = 10,
        filter: dict[str, Any] | None = None,
        mode: str = "copy",
        where: str | None = None,
        max_distance: float | None = None,
        region: str | None = None,
        proposals: int = 0,
    ) -> dict[str, Any]:
        """Finds the album's images nearest to an image given by bytes, URL or id: its copies ("copy"), or
        images like it ("similar"), among those matching the filter (JSON form or `where` text); with
        `region` ("x,y,w,h" in the image's pixels) only for that box of the image; with `proposals` also
        up to that many regions of the image worth searching, each with its own results ("regions")."""
        params: dict[str, Any] = {"top_k": top_k, "mode": mode}
        if filter:
            params["filter"] = json.dumps(filter)
        if where:
            params["where"] = where
        if max_distance is not None:
            params["max_distance"] = max_distance
        if region:
            params["region"] = region
        if proposals:
            params["proposals"] = proposals
        return self._query(f"/v1/albums/{album}/search", params, image, url, image_id)

    def recognize(self, album: str, label: str, *, image: bytes | None = None, url: str | None = None,
                  image_id: str | None = None, evidence: int = 5, threshold: float | None = None,
                  faces: bool = False) -> dict[str, Any]:
        """The label (of the album's `label` attribute) the image most likely has, with its calibrated
        confidence and the nearest labelled images, or unknown; with `faces`, by the photo's largest face."""
        params: dict[str, Any] = {"label": label, "evidence": evidence, "faces": faces}
        if threshold is not None:
            params["threshold"] = threshold
        return self._query(f"/v1/albums/{album}/recognize", params, image, url, image_id)

    def duplicates(self, album: str, max_distance: float | None = None) -> dict[str, Any]:
        """Groups of near-duplicate images of the album (within `max_distance`, else the gateway's near-duplicate
        distance), the largest first."""
        params = {"max_distance": max_distance} if max_distance is not None else {}
        return dict(self._json(self.http.get(f"/v1/albums/{album}/duplicates", params=params)))

    def search_faces(self, album: str, *, image: bytes | None = None, url: str | None = None,
                     image_id: str | None = None, top_k: int = 10, max_distance: float | None = None,
                     face: int = 0, region: str | None = None) -> dict[str, Any]:
        """The album's images where the person of the query's face (`face`: 0 the largest) appears; `region`
        ("x,y,w,h"): the face looked for in that box of the query only (its boxes still in the whole image's
        pixels)."""
        params: dict[str, Any] = {"top_k": top_k, "face": face}
        if max_distance is not None:
            params["max_distance"] = max_distance
        if region:
            params["region"] = region
        return self._query(f"/v1/albums/{album}/faces/search", params, image, url, image_id)

    def _query(self, path: str, params: dict[str, Any], image: bytes | None, url: str | None,
               image_id: str | None) -> dict[str, Any]:
        """POSTs a query image (its bytes as the `file` part, or its `url` or `image_id` as a form field)."""
        files = {"file": ("query", image, "application/octet-stream")} if image is not None else None
        data = {k: v for k, v in {"url": url, "image_id": image_id}.items() if v}
        return dict(self._json(self.http.post(path, params=params, files=files, data=data)))

    def get_image(self, album: str, image_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.get(f"/v1/albums/{album}/images/{image_id}")))

    def image_content(self, album: str, image_id: str) -> bytes:
        """The image's original bytes."""
        response = self.http.get(f"/v1/albums/{album}/images/{image_id}/content")
        _raise_for_error(response)
        return response.content

    def image_faces(self, album: str, image_id: str) -> dict[str, Any]:
        """The faces found in the image (an album that indexes faces), the largest first."""
        return dict(self._json(self.http.get(f"/v1/albums/{album}/images/{image_id}/faces")))

    def update_image(self, album: str, image_id: str, attributes: dict[str, Any],
                     name: str | None = None) -> dict[str, Any]:
        """Changes one image's attributes (merged; None removes one) and name; answers the image as it is now."""
        body: dict[str, Any] = {"attributes": attributes, **({"name": name} if name is not None else {})}
        return dict(self._json(self.http.patch(f"/v1/albums/{album}/images/{image_id}", json=body)))

    def update_images(self, album: str, attributes: dict[str, Any], where: str | None = None,
                      all: bool = False) -> int:
        """Changes the attributes of the images matching the filter (every image: `all`); returns how many."""
        params: dict[str, Any] = {"where": where} if where else {"all": all}
        response = self.http.patch(f"/v1/albums/{album}/images", params=params, json={"attributes": attributes})
        return int(self._json(response)["updated"])

    def delete_image(self, album: str, image_id: str) -> bool:
        """Deletes one image with its bytes; False if the album had no such image."""
        return bool(self._json(self.http.delete(f"/v1/albums/{album}/images/{image_id}"))["deleted"])

    def delete_images(self, album: str, where: str | None = None, all: bool = False) -> int:
        """Deletes the images matching the filter (every image: `all`); returns how many."""
        params: dict[str, Any] = {"where": where} if where else {"all": all}
        return int(self._json(self.http.delete(f"/v1/albums/{album}/images", params=params))["deleted"])
