"""The project's error tree, and how each error crosses gRPC and HTTP.

    ImageSearchError                   500 INTERNAL         "internal"
    ├── InvalidArgument                400 INVALID_ARGUMENT "invalid_argument"
    │   ├── InvalidImage               422                  "invalid_image"
    │   ├── ImageTooLarge              413                  "image_too_large"
    │   ├── InvalidAttributes          422                  "invalid_attributes"
    │   ├── InvalidFilter              422                  "invalid_filter"
    │   ├── UnknownLabel               422                  "unknown_label"
    │   ├── NoLabels                   422                  "no_labels"
    │   ├── InvalidRegion              422                  "invalid_region"
    │   ├── NoFaceFound                422                  "no_face_found"
    │   └── UrlFetchFailed             422                  "url_fetch_failed"
    ├── NotFound                       404 NOT_FOUND        "not_found"
    │   ├── AlbumNotFound              404                  "album_not_found"
    │   ├── ImageNotFound              404                  "image_not_found"
    │   └── FileNotFound               404                  "file_not_found" (an import's item only)
    ├── AlreadyExists                  409 ALREADY_EXISTS   "already_exists"
    ├── ModelMismatch                  409 FAILED_PRECONDITION "model_mismatch"
    ├── FacesNotEnabled                409 FAILED_PRECONDITION "faces_not_enabled"
    └── Unavailable                    503 UNAVAILABLE      "unavailable"
        ├── ExtractorUnavailable       503                  "extractor_unavailable"
        ├── FaceModelUnavailable       503                  "face_model_unavailable"
        ├── SearchUnavailable          503                  "search_unavailable"
        └── StoreUnavailable           503                  "store_unavailable"

Every service raises these; the gRPC and HTTP boundaries turn them into a status with the
`reason` carried along (gRPC trailing metadata `x-error-reason`, JSON body `error.reason`), and a
client turns a status back into the same class with `error_from_reason`. Third-party errors
(pymilvus, minio, redis, grpc) are mapped at the module that calls them.
"""

from __future__ import annotations

import grpc


class ImageSearchError(Exception):
    """Base of every error this project raises on purpose."""

    reason = "internal"
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ImageSearchError):
    reason = "invalid_argument"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class InvalidImage(InvalidArgument):
    """The bytes are not a decodable image."""

    reason = "invalid_image"
    http_status = 422


class ImageTooLarge(InvalidArgument):
    """The image is over the configured byte or pixel limit."""

    reason = "image_too_large"
    http_status = 413


class InvalidAttributes(InvalidArgument):
    reason = "invalid_attributes"
    http_status = 422


class InvalidFilter(InvalidArgument):
    reason = "invalid_filter"
    http_status = 422


class UnknownLabel(InvalidArgument):
    """Recognition by an attribute that no image of the album carries and the album does not declare."""

    reason = "unknown_label"
    http_status = 422


class NoLabels(InvalidArgument):
    """Recognition by a declared attribute that no image of the album has a value of yet."""

    reason = "no_labels"
    http_status = 422


class InvalidRegion(InvalidArgument):
    """A query region that does not lie inside its image."""

    reason = "invalid_region"
    http_status = 422


class NoFaceFound(InvalidArgument):
    """A face search or recognition by faces whose query image shows no face the detector finds."""

    reason = "no_face_found"
    http_status = 422


class UrlFetchFailed(InvalidArgument):
    """An image URL given by the caller could not be fetched."""

    reason = "url_fetch_failed"
    http_status = 422


class NotFound(ImageSearchError):
    reason = "not_found"
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlbumNotFound(NotFound):
    reason = "album_not_found"


class ImageNotFound(NotFound):
    reason = "image_not_found"


class FileNotFound(NotFound):
    """An import's manifest names a file the import does not hold."""

    reason = "file_not_found"


class AlreadyExists(ImageSearchError):
    reason = "already_exists"
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class ModelMismatch(ImageSearchError):
    """An album's vectors were made by another model or pipeline than the extractor's."""

    reason = "model_mismatch"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class FacesNotEnabled(ImageSearchError):
    """A face search in an album that does not index faces."""

    reason = "faces_not_enabled"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Unavailable(ImageSearchError):
    reason = "unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class ExtractorUnavailable(Unavailable):
    reason = "extractor_unavailable"


class FaceModelUnavailable(Unavailable):
    """The extractor has no face models installed."""

    reason = "face_model_unavailable"


class SearchUnavailable(Unavailable):
    reason = "search_unavailable"


class StoreUnavailable(Unavailable):
    reason = "store_unavailable"


def _all_subclasses(cls: type[ImageSearchError]) -> list[type[ImageSearchError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_REASON: dict[str, type[ImageSearchError]] = {
    cls.reason: cls for cls in _all_subclasses(ImageSearchError)
}

_BY_GRPC_CODE: dict[grpc.StatusCode, type[ImageSearchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: ModelMismatch,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
}


def error_from_reason(reason: str | None, code: grpc.StatusCode, message: str) -> ImageSearchError:
    """Rebuilds the error a peer raised from its reason, falling back to its status code."""
    cls = ERRORS_BY_REASON.get(reason or "") or _BY_GRPC_CODE.get(code, ImageSearchError)
    return cls(message)
