"""analysis.shards: datasets written shard by shard, each shard atomically, the whole only when complete."""

from __future__ import annotations

import os

import numpy as np
import pytest

from analysis.shards import ShardWriter, save_shards
from analysis.sources import open_source


def leftovers(parent):
    """Hidden temporary entries left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip_and_shard_size(tmp_path):
    x = np.arange(40.0, dtype=np.float32).reshape(10, 4)
    out = save_shards(tmp_path / "ds", {"x": x, "layer/w": np.eye(3)}, shard_size=48)  # 3 items of 16 B
    assert sorted(os.listdir(out / "x")) == ["000000.npy", "000001.npy", "000002.npy", "000003.npy"]
    src = open_source(out, "x")
    assert [s.shape[0] for s in src.shards] == [3, 3, 3, 1]
    np.testing.assert_array_equal(src.read(), x)
    np.testing.assert_array_equal(open_source(out, "layer/w").read(), np.eye(3))
    assert leftovers(tmp_path) == []


def test_generators_and_dask_arrays_are_written_chunk_by_chunk(tmp_path):
    da = pytest.importorskip("dask.array")
    seen = []

    def chunks():
        for i in range(4):
            seen.append(i)
            yield np.full((2, 3), float(i))

    lazy = da.arange(24.0, chunks=6).reshape(8, 3).rechunk((3, 3))
    out = save_shards(tmp_path / "ds", {"g": chunks(), "d": lazy})
    assert seen == [0, 1, 2, 3]
    assert open_source(out, "g").read()[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [s.shape[0] for s in open_source(out, "d").shards] == [3, 3, 2]
    np.testing.assert_array_equal(open_source(out, "d").read(), np.arange(24.0).reshape(8, 3))


def test_failure_leaves_nothing(tmp_path):
    def chunks():
        yield np.ones((2, 3))
        yield np.ones((2, 4))  # does not fit the first chunk

    with pytest.raises(ValueError, match=r"x: chunk of shape \(2, 4\) .* does not fit the earlier shards"):
        save_shards(tmp_path / "ds", {"x": chunks()})
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []

    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path / "ds") as w:
        w.append("x", np.ones((2, 3)))
        raise KeyboardInterrupt
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


def test_existing_destination(tmp_path):
    save_shards(tmp_path / "ds", {"x": np.zeros((2, 2))})
    with pytest.raises(FileExistsError):
        save_shards(tmp_path / "ds", {"x": np.ones((3, 2))})
    np.testing.assert_array_equal(open_source(tmp_path / "ds", "x").read(), np.zeros((2, 2)))
    save_shards(tmp_path / "ds", {"y": np.ones((3, 2))}, overwrite=True)
    assert sorted(os.listdir(tmp_path / "ds")) == ["y"] and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["", "../x", "/abs", "a/./b", "a//b"])
def test_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="array name"), ShardWriter(tmp_path / "ds") as w:
        w.append(name, np.ones((1, 1)))
    assert leftovers(tmp_path) == []


def test_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="expected a real numeric array with a batch axis"), \
            ShardWriter(tmp_path / "ds") as w:
        w.append("x", np.float64(1.0))
    with pytest.raises(ValueError, match="real numeric"), ShardWriter(tmp_path / "ds") as w:
        w.append("x", np.array(["a"]))
