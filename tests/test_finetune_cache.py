"""The pretraining cache: hits, invalidation by configuration and version, corrupt and stale entries."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import lbpcore
from analysis.finetune import cache_key, cache_path, default_cache_dir, load_or_build


class Builder:
    def __init__(self, value=1.0):
        self.calls = 0
        self.value = value

    def __call__(self):
        self.calls += 1
        return {"w": np.full(3, self.value), "b": np.arange(2)}, {"accuracy": 0.5, "curve": [np.float32(0.25)]}


def test_hit_after_build(tmp_path):
    build = Builder()
    arrays, info, status, path = load_or_build({"steps": 3}, build, cache_dir=tmp_path / "sub")
    assert status == "built" and build.calls == 1 and path.parent == tmp_path / "sub"
    assert info == {"accuracy": 0.5, "curve": [0.25]}
    again, info2, status2, path2 = load_or_build({"steps": 3}, build, cache_dir=tmp_path / "sub")
    assert status2 == "hit" and build.calls == 1 and path2 == path and info2 == info
    assert set(again) == {"w", "b"} and again["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_invalidated_by_config_and_version(tmp_path, monkeypatch):
    build = Builder()
    p1 = load_or_build({"steps": 3}, build, cache_dir=tmp_path)[3]
    _, _, status, p2 = load_or_build({"steps": 4}, build, cache_dir=tmp_path)
    assert status == "built" and p2 != p1 and build.calls == 2
    monkeypatch.setattr(lbpcore, "__version__", "999.0")
    assert cache_key({"steps": 3})["lbpcore"] == "999.0"
    _, _, status, p3 = load_or_build({"steps": 3}, build, cache_dir=tmp_path)
    assert status == "built" and p3 not in (p1, p2) and build.calls == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-meta", "stale-key", "bad-shape"])
def test_corrupt_or_stale_entries_are_rebuilt(tmp_path, damage):
    spec = {"steps": 3}
    path = load_or_build(spec, Builder(), cache_dir=tmp_path)[3]
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "no-meta":
        buf = io.BytesIO()
        np.savez(buf, w=np.zeros(3))
        path.write_bytes(buf.getvalue())
    elif damage == "stale-key":  # a file under the same name written for another key
        buf = io.BytesIO()
        meta = json.dumps({"key": cache_key({"steps": 99}), "info": {}})
        np.savez(buf, w=np.zeros(3), b=np.zeros(2), __meta__=np.array(meta))
        path.write_bytes(buf.getvalue())

    def check(arrays):
        if damage == "bad-shape" and arrays["w"].shape == (3,):
            raise ValueError("wrong shape")

    build = Builder(value=7.0)
    arrays, _, status, again = load_or_build(spec, build, cache_dir=tmp_path, check=check)
    assert status == "rebuilt" and build.calls == 1 and again == path
    assert arrays["w"].tolist() == [7.0, 7.0, 7.0]
    if damage != "bad-shape":
        assert load_or_build(spec, build, cache_dir=tmp_path, check=check)[2] == "hit"


def test_failed_build_leaves_nothing(tmp_path):
    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        load_or_build({"steps": 3}, boom, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("LBP_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    assert cache_path({"x": 1}).parent == tmp_path / "a"
    monkeypatch.delenv("LBP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lbpcore"
    assert cache_path({"x": 1}) == cache_path({"x": 1}) != cache_path({"x": 2})
    assert cache_path({"x": 1}, tmp_path, prefix="other").name.startswith("other-")
