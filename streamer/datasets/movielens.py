"""MovieLens readers: ratings as view events, item and user side information as dicts.

Three layouts are read, told apart by file name, else by the first line:

- ml-100k: `u.data` (`user<TAB>item<TAB>rating<TAB>ts`), `u.item` (`|`-separated, 19 genre
  flags), `u.user` (`id|age|gender|occupation|zip`);
- ml-1m: `ratings.dat` (`user::item::rating::ts`), `movies.dat` (`id::title::A|B`),
  `users.dat` (`id::gender::age::occupation code::zip`);
- RecBole atomic files: `*.inter`, `*.item`, `*.user`, tab-separated under a typed header
  such as `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`.

`path` may be the file or a folder holding one of them. Ids are kept as strings exactly
as in the file. Features are normalised across layouts: items get `title`, `year`
(int or None) and `genre` (list); users get `age` (int), `gender` (lower case),
`occupation` and `zip_code`; other RecBole columns are kept under their own names, typed
by the header. A malformed line raises ValueError naming the file and line number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, NamedTuple

from streamer.events import MAX_ID_BYTES, ViewEvent

Features = dict[str, Any]

ML100K_GENRES: Final = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML1M_OCCUPATIONS: Final = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
RECBOLE_TYPES: Final = ("token", "token_seq", "float", "float_seq")

_YEAR_IN_TITLE: Final = re.compile(r"\((\d{4})\)\s*$")
_LEGACY_ENCODING: Final = "latin-1"  # MovieLens' own files predate UTF-8 there
_SHORT_ID: Final = MAX_ID_BYTES // 4  # text this long is within the byte limit in any UTF-8


class _Layout(NamedTuple):
    """The file names of one kind of data in each layout."""

    ml100k: str
    ml1m: str
    suffix: str  # RecBole


class _Columns(NamedTuple):
    """Where the fields of a rating line are."""

    width: int
    user: int
    item: int
    rating: int | None
    ts: int


_RATINGS: Final = _Layout("u.data", "ratings.dat", ".inter")
_ITEMS: Final = _Layout("u.item", "movies.dat", ".item")
_USERS: Final = _Layout("u.user", "users.dat", ".user")


def _bad(path: Path, lineno: int, reason: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: {reason}")


def _locate(path: Path, layout: _Layout) -> tuple[Path, str]:
    """The file to read and its layout, "ml-100k", "ml-1m" or "recbole"."""
    if path.is_dir():
        for name, kind in ((layout.ml100k, "ml-100k"), (layout.ml1m, "ml-1m")):
            if (path / name).is_file():
                return path / name, kind
        found = sorted(p for p in path.glob(f"*{layout.suffix}") if p.is_file())
        if len(found) == 1:
            return found[0], "recbole"
        wanted = f"{layout.ml100k}, {layout.ml1m} or one *{layout.suffix}"
        raise ValueError(f"{path}: holds {len(found)} *{layout.suffix} files, wanted {wanted}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.name == layout.ml100k:
        return path, "ml-100k"
    if path.name == layout.ml1m:
        return path, "ml-1m"
    if path.suffix == layout.suffix:
        return path, "recbole"
    return path, _sniff(path)


def _sniff(path: Path) -> str:
    with path.open(encoding=_LEGACY_ENCODING) as handle:
        first = next((line for line in handle if line.strip()), "")
    if "::" in first:
        return "ml-1m"
    head = first.split("\t")[0]
    if ":" in head and head.rsplit(":", 1)[1].strip() in RECBOLE_TYPES:
        return "recbole"
    if first.count("\t") >= 3 or first.count("|") >= 3:
        return "ml-100k"
    raise ValueError(f"{path}:1: not a MovieLens ml-100k, ml-1m or RecBole file")


def _rows(path: Path, separator: str | None, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line; `None` splits on any whitespace."""
    with path.open(encoding=encoding, newline="") as handle:
        for lineno, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield lineno, text.split(separator)


def _put(table: dict[str, Features], path: Path, lineno: int, ident: str, row: Features) -> None:
    if ident in table:
        raise _bad(path, lineno, f"id {ident!r} appears twice")
    table[ident] = row


def _need(path: Path, lineno: int, fields: list[str], count: int) -> list[str]:
    if len(fields) != count:
        raise _bad(path, lineno, f"expected {count} fields, found {len(fields)}")
    return fields


def _id(path: Path, lineno: int, text: str, name: str) -> str:
    if not text or len(text.encode("utf-8")) > MAX_ID_BYTES:
        raise _bad(path, lineno, f"{name} id must be 1 to {MAX_ID_BYTES} bytes")
    return text


def _number(path: Path, lineno: int, text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(path, lineno, f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(path, lineno, f"{name} {text!r} is not finite")
    return value


def _integer(path: Path, lineno: int, text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad(path, lineno, f"{name} {text!r} is not an integer") from None


def _view(path: Path, lineno: int, fields: list[str], columns: _Columns) -> ViewEvent:
    """One rating line as a view event, checked field by field; raises naming what is wrong."""
    _need(path, lineno, fields, columns.width)
    ts = fields[columns.ts]
    when = _number(path, lineno, ts, "timestamp")
    if when < 0:
        raise _bad(path, lineno, f"timestamp {ts!r} is negative")
    rating = None if columns.rating is None else fields[columns.rating]
    return ViewEvent(
        user=_id(path, lineno, fields[columns.user], "user"),
        item=_id(path, lineno, fields[columns.item], "item"),
        ts=when,
        rating=None if rating is None else _number(path, lineno, rating, "rating"),
    )


def _views(
    path: Path, rows: Iterator[tuple[int, list[str]]], columns: _Columns
) -> Iterator[ViewEvent]:
    """Rating lines as view events: a cheap check per line, `_view` where it does not pass."""
    width, user, item, rating, ts = columns
    for lineno, fields in rows:
        if len(fields) == width:
            u, i = fields[user], fields[item]
            try:
                when = float(fields[ts])
                score = None if rating is None else float(fields[rating])
            except ValueError:
                when, score = math.nan, None
            if (
                0.0 <= when < math.inf
                and (score is None or math.isfinite(score))
                and 0 < len(u) <= _SHORT_ID
                and 0 < len(i) <= _SHORT_ID
            ):
                yield ViewEvent(u, i, when, 1.0, score, {})
                continue
        yield _view(path, lineno, fields, columns)


# RecBole atomic files ------------------------------------------------------------------


def _recbole_header(path: Path, fields: list[str]) -> list[tuple[str, str]]:
    if not fields:
        raise _bad(path, 1, "no RecBole header (name:type columns)")
    columns = []
    for field in fields:
        name, _, kind = field.strip().rpartition(":")
        if not name or kind not in RECBOLE_TYPES:
            raise _bad(path, 1, f"header field {field!r} is not name:type, type in {RECBOLE_TYPES}")
        columns.append((name, kind))
    return columns


def _recbole_value(path: Path, lineno: int, kind: str, text: str, name: str) -> Any:
    if kind == "token":
        return text
    if kind == "token_seq":
        return text.split()
    if kind == "float":
        return _number(path, lineno, text, name)
    return [_number(path, lineno, part, name) for part in text.split()]


def _recbole_table(path: Path) -> tuple[list[tuple[str, str]], Iterator[tuple[int, list[str]]]]:
    """The typed columns of a RecBole file, and its data rows."""
    rows = _rows(path, "\t", "utf-8-sig")
    return _recbole_header(path, next(rows, (1, []))[1]), rows


def _column(columns: list[tuple[str, str]], name: str) -> int | None:
    names = [column for column, _ in columns]
    return names.index(name) if name in names else None


def _recbole_views(path: Path) -> Iterator[ViewEvent]:
    columns, rows = _recbole_table(path)
    user, item = _column(columns, "user_id"), _column(columns, "item_id")
    rating, ts = _column(columns, "rating"), _column(columns, "timestamp")
    if user is None or item is None or ts is None:
        raise _bad(path, 1, "header needs user_id, item_id and timestamp columns")
    return _views(path, rows, _Columns(len(columns), user, item, rating, ts))


def _recbole_features(
    path: Path, key: str, normalise: Callable[[Path, int, Features], Features]
) -> dict[str, Features]:
    columns, rows = _recbole_table(path)
    if _column(columns, key) is None:
        raise _bad(path, 1, f"header has no {key} column")
    table: dict[str, Features] = {}
    for lineno, fields in rows:
        _need(path, lineno, fields, len(columns))
        record = {
            name: _recbole_value(path, lineno, kind, text, name)
            for (name, kind), text in zip(columns, fields, strict=True)
        }
        ident = _id(path, lineno, record.pop(key), key)
        _put(table, path, lineno, ident, normalise(path, lineno, record))
    return table


# Ratings -------------------------------------------------------------------------------


_MOVIELENS_COLUMNS: Final = _Columns(width=4, user=0, item=1, rating=2, ts=3)


def _ml100k_views(path: Path) -> Iterator[ViewEvent]:
    return _views(path, _rows(path, None, _LEGACY_ENCODING), _MOVIELENS_COLUMNS)


def _ml1m_views(path: Path) -> Iterator[ViewEvent]:
    return _views(path, _rows(path, "::", _LEGACY_ENCODING), _MOVIELENS_COLUMNS)


_VIEW_READERS: Final = {"ml-100k": _ml100k_views, "ml-1m": _ml1m_views, "recbole": _recbole_views}


def read_movielens(path: str | Path) -> list[ViewEvent]:
    """All ratings as view events sorted by timestamp, ties in file order; `rating` kept."""
    file, kind = _locate(Path(path), _RATINGS)
    events = list(_VIEW_READERS[kind](file))
    events.sort(key=attrgetter("ts"))  # stable: ties keep file order
    return events


# Items ---------------------------------------------------------------------------------


def _year(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _ml100k_items(path: Path) -> dict[str, Features]:
    table: dict[str, Features] = {}
    for lineno, fields in _rows(path, "|", _LEGACY_ENCODING):
        item, title, released, _video, _url, *flags = _need(path, lineno, fields, 24)
        if any(flag not in ("0", "1") for flag in flags):
            raise _bad(path, lineno, "genre flags must be 0 or 1")
        features: Features = {
            "title": title,
            "year": _year(released[-4:]),
            "release_date": released,
            "genre": [name for name, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"],
        }
        _put(table, path, lineno, _id(path, lineno, item, "item"), features)
    return table


def _ml1m_items(path: Path) -> dict[str, Features]:
    table: dict[str, Features] = {}
    for lineno, fields in _rows(path, "::", _LEGACY_ENCODING):
        item, title, genres = _need(path, lineno, fields, 3)
        year = _YEAR_IN_TITLE.search(title)
        features: Features = {
            "title": title,
            "year": int(year.group(1)) if year else None,
            "genre": [name for name in genres.split("|") if name],
        }
        _put(table, path, lineno, _id(path, lineno, item, "item"), features)
    return table


def _recbole_item(path: Path, lineno: int, record: Features) -> Features:
    if "movie_title" in record:
        record["title"] = " ".join(record.pop("movie_title"))
    if "release_year" in record:
        record["year"] = _year(record.pop("release_year"))
    if "class" in record:
        record["genre"] = record.pop("class")
    return record


def read_item_features(path: str | Path) -> dict[str, Features]:
    """Item id -> features (`title`, `year`, `genre`, ...) from u.item, movies.dat or *.item."""
    file, kind = _locate(Path(path), _ITEMS)
    if kind == "ml-100k":
        return _ml100k_items(file)
    if kind == "ml-1m":
        return _ml1m_items(file)
    return _recbole_features(file, "item_id", _recbole_item)


# Users ---------------------------------------------------------------------------------


def _put_user(
    table: dict[str, Features], path: Path, lineno: int, fields: tuple[str, str, str, str, str]
) -> None:
    """One user's row of either legacy format: (id, age, gender, occupation, zip)."""
    user, age, gender, occupation, zip_code = fields
    features: Features = {
        "age": _integer(path, lineno, age, "age"),
        "gender": gender.lower(),
        "occupation": occupation,
        "zip_code": zip_code,
    }
    _put(table, path, lineno, _id(path, lineno, user, "user"), features)


def _ml100k_users(path: Path) -> dict[str, Features]:
    table: dict[str, Features] = {}
    for lineno, fields in _rows(path, "|", _LEGACY_ENCODING):
        user, age, gender, occupation, zip_code = _need(path, lineno, fields, 5)
        _put_user(table, path, lineno, (user, age, gender, occupation, zip_code))
    return table


def _ml1m_users(path: Path) -> dict[str, Features]:
    table: dict[str, Features] = {}
    for lineno, fields in _rows(path, "::", _LEGACY_ENCODING):
        user, gender, age, occupation, zip_code = _need(path, lineno, fields, 5)
        code = _integer(path, lineno, occupation, "occupation")
        if not 0 <= code < len(ML1M_OCCUPATIONS):
            raise _bad(
                path, lineno, f"occupation code {code} is not 0..{len(ML1M_OCCUPATIONS) - 1}"
            )
        _put_user(table, path, lineno, (user, age, gender, ML1M_OCCUPATIONS[code], zip_code))
    return table


def _recbole_user(path: Path, lineno: int, record: Features) -> Features:
    if "age" in record:
        age = record["age"]
        record["age"] = int(age) if isinstance(age, float) else _integer(path, lineno, age, "age")
    if isinstance(record.get("gender"), str):
        record["gender"] = record["gender"].lower()
    return record


def read_user_features(path: str | Path) -> dict[str, Features]:
    """User id -> features (`age`, `gender`, `occupation`, `zip_code`, ...)."""
    file, kind = _locate(Path(path), _USERS)
    if kind == "ml-100k":
        return _ml100k_users(file)
    if kind == "ml-1m":
        return _ml1m_users(file)
    return _recbole_features(file, "user_id", _recbole_user)
