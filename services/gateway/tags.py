"""Tags: the extractor's ImageNet labels of an image as its `tags` attribute, and words that find them.

An image added or re-embedded gets the classes the network's own classifier gives it (most probable
first) as `tags`, a list of label names, and their probabilities as `tag_scores` (same order). An
album that declares `tags` as a `string_list` column holds them typed; any other album keeps them as
undeclared JSON attributes, which filters read the same way (`'espresso' = ANY(tags)` in an album
without columns, `attributes.tags` in one with). Tags a caller sets are kept; a re-embed refreshes the
tags the classifier set (those that came with `tag_scores`).

A word finds the labels whose WordNet lemmas include it, case-insensitively ("tabby cat" finds
"tabby"), and itself, so tags set by hand are found too. A word no label has matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.filtering import ATTRIBUTES_PREFIX, Op, Predicate
from services.common.schema import CONTROL_CHARS, MAX_LIST_ITEM_BYTES, TAGS_ATTRIBUTE, AlbumSchema, ColumnType
from services.gateway.records import JsonObject, LabelInfo, Tag

TAGS = TAGS_ATTRIBUTE
TAG_SCORES = "tag_scores"
_SPACES = re.compile(r"[\s_]+")


def normalise(word: str) -> str:
    """A word as the lexicon compares it: lower case, '_' and runs of spaces as one space."""
    return _SPACES.sub(" ", word).strip().casefold()


@dataclass(frozen=True)
class Lexicon:
    """Which labels each word names: every lemma of every label the extractor can give."""

    labels: tuple[LabelInfo, ...] = ()
    source: str = ""
    _by_word: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_word: dict[str, list[str]] = {}
        for label in self.labels:
            for lemma in {normalise(w) for w in label.lemmas}:
                by_word.setdefault(lemma, []).append(label.name)
        self._by_word.update({w: tuple(dict.fromkeys(names)) for w, names in by_word.items()})

    def labels_for(self, word: str) -> tuple[str, ...]:
        """The label names the word is a lemma of (none for a word no label has)."""
        return self._by_word.get(normalise(word), ())

    def tag_values(self, word: str) -> tuple[str, ...]:
        """What a search by this word looks for in `tags`: its labels, then the word as given."""
        return tuple(dict.fromkeys([*self.labels_for(word), word.strip()]))


def check_word(word: str) -> str:
    """The word, or InvalidArgument for one no tag could be (empty, too long, a control character)."""
    if not word.strip():
        raise InvalidArgument("tag must be a word, e.g. tag=espresso")
    if len(word.encode()) > MAX_LIST_ITEM_BYTES or CONTROL_CHARS.search(word):
        raise InvalidArgument(f"tag must be at most {MAX_LIST_ITEM_BYTES} bytes without control characters")
    return word


def tags_column(schema: AlbumSchema) -> str | None:
    """How a filter names the album's tags: declared, undeclared, or None (`tags` declared of another type)."""
    column = schema.get(TAGS)
    if column is None:
        return f"{ATTRIBUTES_PREFIX}{TAGS}" if schema else TAGS
    return TAGS if column.type is ColumnType.STRING_LIST else None


def tag_filter(schema: AlbumSchema, values: Sequence[str]) -> Predicate | None:
    """Images whose tags hold any of the values (None where the album's `tags` is not a list)."""
    column = tags_column(schema)
    return Predicate(column, Op.CONTAINS_ANY, tuple(values)) if column else None


def tags_set_by_hand(schema: AlbumSchema, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Changes that set `tags` by hand clear the classifier's scores too (they were of its own tags: shown beside
    the new words, and a re-embed would take the new words for the classifier's and replace them), unless they
    set the scores as well or the album declares them."""
    if TAGS in changes and TAG_SCORES not in changes and schema.get(TAG_SCORES) is None:
        return {**changes, TAG_SCORES: None}
    return dict(changes)


def with_tags(schema: AlbumSchema, attributes: JsonObject, tags: Sequence[Tag], refresh: bool = False) -> JsonObject:
    """The attributes with the classifier's tags, unless the caller set `tags` (kept, except that
    `refresh` replaces tags the classifier set before) or the album declares `tags` of another type."""
    if not tags or tags_column(schema) is None:
        return attributes
    own = attributes.get(TAGS) is not None and not (refresh and TAG_SCORES in attributes)
    if own:
        return attributes
    scores = {} if schema.get(TAG_SCORES) else {TAG_SCORES: [t.score for t in tags]}
    return {**attributes, TAGS: [t.name for t in tags], **scores}
