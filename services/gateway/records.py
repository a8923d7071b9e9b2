"""The gateway's domain records: what the use cases take and return, free of HTTP and gRPC types."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidAttributes
from services.common.filtering import Expr
from services.common.schema import NO_COLUMNS, AlbumSchema

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    """The extractor's model and pipeline id, and the length of its vectors."""

    model: str
    dim: int
    # The transforms a copy search may try on a query (EmbedPurpose.QUERY_VARIANTS), e.g. "rot90".
    query_variants: tuple[str, ...] = ()
    # The face detector and descriptor (Extractor.describe_faces); "" and 0 without face models.
    face_model: str = ""
    face_dim: int = 0


@dataclass(frozen=True)
class Tag:
    """A class the extractor's ImageNet classifier gives an image, with its probability."""

    name: str
    score: float


@dataclass(frozen=True)
class LabelInfo:
    """A class the classifier can give: its name, its WordNet lemmas (the name first), its synset id."""

    name: str
    lemmas: tuple[str, ...]
    synset: str = ""


@dataclass(frozen=True)
class LabelSet:
    """Every class the extractor's classifier can give (none without one), and where they come from."""

    labels: tuple[LabelInfo, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ItemFailure:
    """Why one item of a batch failed; `reason` is one of the error tree's reasons."""

    reason: str
    message: str


class EmbedPurpose(enum.IntEnum):
    """Why images are embedded (the extractor's `EmbedRequest.Purpose`)."""

    # One vector per image.
    QUERY = 0
    # Also every database row of each image (one, or more in a recipe with rotated, mirrored or
    # region rows): what an album stores.
    INDEX = 1
    # Also the vector of each of the model's query variants (rotated, mirrored): `Embedding.variants`.
    QUERY_VARIANTS = 2


@dataclass(frozen=True)
class Proposal:
    """A region of an image the extractor proposes searching on its own: left, top, width and height as
    fractions of the image as shown (after its EXIF orientation), and how much it stands out."""

    x: float
    y: float
    width: float
    height: float
    score: float


@dataclass(frozen=True)
class Embedding:
    """One image's vector (and, for INDEX, all its rows, the first being `vector`), or why it has none."""

    vector: list[float] | None = None
    error: ItemFailure | None = None
    rows: list[list[float]] = field(default_factory=list)
    # When asked for: serialised local features (a query's upright, then mirrored); see local_features.
    local_features: list[bytes] = field(default_factory=list)
    # For QUERY_VARIANTS: one vector per query variant of the model (ModelInfo.query_variants).
    variants: list[list[float]] = field(default_factory=list)
    # For INDEX: the classifier's classes for the image, most probable first.
    tags: list[Tag] = field(default_factory=list)
    # When asked for: regions of the image worth searching on their own, best first.
    proposals: list[Proposal] = field(default_factory=list)

    @property
    def stored_vectors(self) -> list[list[float]]:
        """What an album stores for the image: its rows, or its one vector."""
        return self.rows or ([self.vector] if self.vector is not None else [])


@dataclass(frozen=True)
class EmbedBatch:
    model: str
    dim: int
    results: list[Embedding]


@dataclass(frozen=True)
class FaceBox:
    """Where a face is in its image (pixels, EXIF orientation applied), its five landmarks (eye corners,
    nose) and the detector's score."""

    x: int
    y: int
    width: int
    height: int
    score: float = 0.0
    landmarks: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class FoundFace:
    box: FaceBox
    # Who it is: L2-normalised, compared by cosine distance.
    descriptor: list[float]


@dataclass(frozen=True)
class ImageFaces:
    """One image's faces, the largest first (none: no face found), or why it could not be looked at."""

    width: int = 0
    height: int = 0
    faces: list[FoundFace] = field(default_factory=list)
    error: ItemFailure | None = None


@dataclass(frozen=True)
class FaceBatch:
    model: str
    dim: int
    results: list[ImageFaces]


@dataclass(frozen=True)
class Collection:
    """An album as the search service holds it."""

    name: str
    dim: int
    metric: str
    model: str
    created_at_ms: int
    count: int
    schema: AlbumSchema = NO_COLUMNS


@dataclass(frozen=True)
class Item:
    """One stored image as the search service holds it: metadata (declared attributes typed, every one
    present, None when null) and, when asked, its vectors."""

    id: str
    name: str
    content_hash: str
    attributes: JsonObject
    created_at_ms: int
    vectors: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class Hit:
    id: str
    name: str
    distance: float
    attributes: JsonObject
    content_hash: str
    created_at_ms: int
    # Which of the image's vectors matched (0: the first).
    row: int = 0


@dataclass(frozen=True)
class Album:
    name: str
    image_count: int
    model: str
    dim: int
    metric: str
    created_at_ms: int
    schema: AlbumSchema = NO_COLUMNS
    # The face model of the album's faces, "" when it does not index faces.
    face_model: str = ""
    # Whether the album keeps a keypoint index (a close-up of a detail finds the image it is cut from).
    details: bool = False


@dataclass(frozen=True)
class NewImage:
    """An image to add: its bytes, an optional name, and its attributes (a JSON object's values; declared
    ones are checked against the album's columns)."""

    content: bytes
    name: str = ""
    # The attributes, or why the ones sent could not be read (that image then fails alone).
    attributes: JsonObject | InvalidAttributes = field(default_factory=dict)
    # What the caller said the bytes are; sniffed from the bytes when they tell more.
    content_type: str = ""


@dataclass(frozen=True)
class ImageFilter:
    """Which images, in one of the filter language's three forms (at most one given): the JSON form
    (`{"price": {"lt": 50}}`), the text form (`price < 50 and colour in ('red', 'blue')`), or a tree."""

    json: str = ""
    where: str = ""
    tree: Expr | None = None

    def __bool__(self) -> bool:
        return bool(self.json.strip() or self.where.strip() or self.tree is not None)


NO_FILTER = ImageFilter()


class AddStatus(enum.StrEnum):
    ADDED = "added"
    # The same bytes are in the album already.
    DUPLICATE = "duplicate"
    # A near-duplicate of an image in the album (on_duplicate "skip"): not added.
    SKIPPED = "skipped"
    # Added in place of its near-duplicate (on_duplicate "replace").
    REPLACED = "replaced"
    FAILED = "failed"


class OnDuplicate(enum.StrEnum):
    """What an add does with an image within the near-duplicate distance of one already in the album."""

    KEEP = "keep"
    SKIP = "skip"
    REPLACE = "replace"


@dataclass(frozen=True)
class AddResult:
    index: int
    name: str
    status: AddStatus
    id: str = ""
    error: ItemFailure | None = None
    # Skipped or replaced: the image of the album it is a near-duplicate of.
    near: str = ""


@dataclass(frozen=True)
class ImageRecord:
    """An image of an album as the public API shows it."""

    album: str
    id: str
    name: str
    content_hash: str
    attributes: JsonObject
    created_at_ms: int
    url: str
    thumbnail_url: str
    # Known only where the blob was looked at (a single image), else empty / 0.
    content_type: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class ScoredImage:
    image: ImageRecord
    distance: float
    # Copy search: the query keypoints one affine map carries onto this image (None: not verified).
    matches: int | None = None


@dataclass(frozen=True)
class SearchOutcome:
    album: str
    metric: str
    model: str
    took_ms: float
    hits: list[ScoredImage]
    # Regions of the query proposed and searched on their own (a search asking for proposals), best first.
    regions: list[RegionOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class RegionOutcome:
    """A proposed region of the query, in its pixels as shown (x, y, width, height), and what it finds."""

    box: tuple[int, int, int, int]
    score: float
    hits: list[ScoredImage]


class SearchMode(enum.StrEnum):
    """What a search looks for."""

    # Copies of the query (edited, cropped, rotated, mirrored): every stored row of an image counts.
    COPY = "copy"
    # Images like the query: upright global rows only, with query expansion.
    SIMILAR = "similar"


@dataclass(frozen=True)
class Query:
    """Exactly one of: the bytes of an image, a URL to fetch one from, an image of the album."""

    image: bytes | None = None
    url: str | None = None
    image_id: str | None = None


@dataclass(frozen=True)
class ReembedReport:
    """What re-embedding an album did: its new model, and the images it could not re-embed (dropped)."""

    album: str
    model: str
    dim: int
    previous_model: str
    images: int
    failed: list[tuple[str, ItemFailure]]
    took_s: float


@dataclass(frozen=True)
class Listing:
    """What a list of an album's images asks for: which, in which order, which page."""

    filter: ImageFilter = NO_FILTER
    limit: int = 50
    offset: int = 0
    # Ordered by id: only images after this id (keyset paging, for albums of any size).
    after: str = ""
    # A built-in or declared column to order by ("" orders by id).
    order_by: str = ""
    descending: bool = False
    # Where images without a value of `order_by` go (None: last ascending, first descending, as SQL).
    nulls_first: bool | None = None
    # Only images tagged with this word's labels (services.gateway.tags), besides the filter (None: any image; an
    # empty word is refused).
    tag: str | None = None


FIRST_PAGE = Listing()


@dataclass(frozen=True)
class GroupCount:
    """How many of an album's images have one combination of column values."""

    key: tuple[Any, ...]
    count: int


@dataclass(frozen=True)
class SqlRow:
    """One row of a SQL result: its values, in the order of the result's columns, and the image it is
    about (none for counts)."""

    values: tuple[Any, ...]
    image: ImageRecord | None = None


@dataclass(frozen=True)
class SqlResult:
    """What a SQL statement did: the rows it selected, or how many images it changed."""

    statement: str
    album: str
    columns: tuple[str, ...] = ()
    rows: tuple[SqlRow, ...] = ()
    affected: int | None = None
    took_ms: float = 0.0


@dataclass(frozen=True)
class LabelScore:
    """A label the query's nearest labelled images vote for: its calibrated confidence (the chance it is
    right for a photo of one of the album's labels), its share of the votes, its nearest image's distance."""

    label: str
    confidence: float
    share: float
    nearest: float


@dataclass(frozen=True)
class Evidence:
    """A labelled image near the query, with its labels."""

    image: ImageRecord
    distance: float
    labels: tuple[str, ...]


@dataclass(frozen=True)
class CalibrationReport:
    """What the album's own labelled images measured (see services.gateway.recognition.Calibration)."""

    images: int
    labels: int
    calibrated: bool
    top1: float | None
    known_rejected: float | None
    unknown_rejected: float | None


@dataclass(frozen=True)
class RecognizeOutcome:
    """A photo recognised by an album's label attribute: the label, or unknown when the photo is of none."""

    album: str
    attribute: str
    model: str
    took_ms: float
    # None when unknown.
    label: str | None
    unknown: bool
    # The top label's calibrated confidence (also when unknown).
    confidence: float
    # The chance the photo is of one of the album's labels at all; unknown below `threshold`.
    known: float
    threshold: float
    candidates: list[LabelScore]
    evidence: list[Evidence]
    calibration: CalibrationReport
    # By faces: the query's face recognised (its largest), in the query image's pixels.
    face: FaceBox | None = None


@dataclass(frozen=True)
class FaceHit:
    """An image where the query's person appears: the face that matched, its distance, the image's size."""

    image: ImageRecord
    distance: float
    face: FaceBox
    width: int
    height: int


@dataclass(frozen=True)
class FaceSearchOutcome:
    album: str
    model: str
    took_ms: float
    # The query's faces, the largest first, and which of them searched.
    faces: list[FaceBox]
    face: int
    width: int
    height: int
    max_distance: float
    hits: list[FaceHit]
