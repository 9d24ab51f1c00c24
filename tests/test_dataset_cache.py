"""fetch_ml100k without the network: a fake wheel stands in for pip's download."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.datasets import cache
from streamer.datasets.cache import ML100K_FILES, ML100K_PREFIX, cache_dir, fetch_ml100k


def _fake_download(calls: list[str]) -> Callable[[str, Path], Path]:
    def download(requirement: str, into: Path) -> Path:
        calls.append(requirement)
        into.mkdir(parents=True)
        wheel = into / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name in ML100K_FILES:
                archive.writestr(ML100K_PREFIX + name, f"{name}\n")
            archive.writestr(ML100K_PREFIX + "nested/skip.txt", "not flat")
            archive.writestr("recbole/other.py", "")
        return wheel

    return download


def test_fetch_extracts_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cache, "_download_wheel", _fake_download(calls))
    monkeypatch.setenv("RECSTREAM_CACHE", str(tmp_path / "cache"))
    folder = fetch_ml100k()
    assert folder == tmp_path / "cache" / "data" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(ML100K_FILES)
    assert (folder / "ml-100k.inter").read_text() == "ml-100k.inter\n"
    assert fetch_ml100k() == folder
    assert calls == [cache.RECBOLE_REQUIREMENT]  # the second call found it there
    assert [p.name for p in folder.parent.iterdir()] == ["ml-100k"]  # no temp left over


def test_fetch_replaces_a_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_download_wheel", _fake_download([]))
    dest = tmp_path / "ml"
    dest.mkdir()
    (dest / "ml-100k.inter").write_text("half")
    assert fetch_ml100k(dest) == dest
    assert (dest / "ml-100k.user").is_file()


def test_cache_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTREAM_CACHE", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "recstream"
