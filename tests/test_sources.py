"""analysis.sources: one opener for .npy, .npz, shard directories, globs and Zarr stores."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from analysis.io import DataError
from analysis.sources import BatchSource, _LoadedShard, _MappedShard, as_source, is_source_like, open_source


@pytest.fixture
def data():
    return np.random.default_rng(3).standard_normal((11, 6, 4)).astype(np.float32)


def write_shards(directory, data, sizes, name="x_{}.npy"):
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, size in enumerate(sizes):
        np.save(directory / name.format(i), data[start:start + size])
        start += size
    return directory


def test_npy_is_mapped_and_read_by_range(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    src = open_source(tmp_path / "x.npy")
    assert isinstance(src.shards[0], _MappedShard) and src.kind == "npy"
    assert src.shape == data.shape and src.dtype == np.float32 and src.nbytes == data.nbytes and len(src) == 11
    np.testing.assert_array_equal(src.read(), data)
    np.testing.assert_array_equal(src.read(3, 7), data[3:7])
    np.testing.assert_array_equal(src[2:5, :, 1:3], data[2:5, :, 1:3])
    assert src[4:4].shape == (0, 6, 4) and src[:0, :0, :0].shape == (0, 0, 0)  # what dask.array probes
    assert not isinstance(src.read(0, 2), np.memmap)
    np.testing.assert_array_equal(np.asarray(src), data)  # NumPy reads a source whole
    assert np.asarray(src, dtype=np.float64).dtype == np.float64 and np.shape(src) == data.shape


def test_fortran_order_npy(tmp_path, data):
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    src = open_source(tmp_path / "f.npy")
    np.testing.assert_array_equal(src.read(2, 9), data[2:9])


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members(tmp_path, data, compressed):
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "a.npz", x=data, w=np.eye(3))
    src = open_source(tmp_path / "a.npz", "x")
    assert isinstance(src.shards[0], _LoadedShard if compressed else _MappedShard)
    assert src.name.endswith("a.npz[x]") and src.kind == "npz"
    np.testing.assert_array_equal(src.read(1, 10), data[1:10])
    with pytest.raises(DataError, match=r"holds 2 arrays \(w, x\); choose one"):
        open_source(tmp_path / "a.npz")
    with pytest.raises(DataError, match=r"no array 'grad_y' \(it has: w, x\)"):
        open_source(tmp_path / "a.npz", "grad_y")


def test_npz_with_zip64_member_header(tmp_path, data):
    """A stored member written with a zip64 extra field (as np.savez does for large members) still maps."""
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("x.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, data)
    src = open_source(path, "x")
    assert isinstance(src.shards[0], _MappedShard)
    np.testing.assert_array_equal(src.read(), data)


def test_shard_directory_natural_order_and_glob(tmp_path, data):
    d = write_shards(tmp_path / "d", data, [1] * 11)  # x_0 ... x_10: x_10 sorts after x_9
    src = open_source(d)
    assert src.kind == "shards" and len(src.shards) == 11 and src.starts == tuple(range(11))
    np.testing.assert_array_equal(src.read(), data)
    np.testing.assert_array_equal(src.read(8, 11), data[8:11])
    globbed = open_source(str(tmp_path / "d" / "x_1*.npy"))  # x_1, x_10
    np.testing.assert_array_equal(globbed.read(), data[[1, 10]])
    with pytest.raises(DataError, match="no .npy shards found"):
        open_source(str(tmp_path / "d" / "y_*.npy"))
    with pytest.raises(DataError, match="a key selects"):
        open_source(str(tmp_path / "d" / "x_*.npy"), "x")


def test_reads_across_shard_boundaries(tmp_path, data):
    src = open_source(write_shards(tmp_path / "d", data, [4, 0, 3, 4]))  # an empty shard is fine
    assert src.starts == (0, 4, 4, 7)
    for a, b in [(0, 11), (3, 8), (4, 7), (6, 11), (10, 11)]:
        np.testing.assert_array_equal(src.read(a, b), data[a:b])


def test_dataset_directory_with_keys(tmp_path, data):
    write_shards(tmp_path / "ds" / "x", data, [5, 6])
    np.save(tmp_path / "ds" / "weight.npy", np.eye(4))
    np.testing.assert_array_equal(open_source(tmp_path / "ds", "x").read(), data)
    np.testing.assert_array_equal(open_source(tmp_path / "ds", "weight").read(), np.eye(4))
    with pytest.raises(DataError, match=r"no array 'grad_y' \(it has: weight, x\)"):
        open_source(tmp_path / "ds", "grad_y")
    with pytest.raises(DataError, match="holds arrays weight, x; choose one with a key"):
        open_source(tmp_path / "ds")  # not weight.npy as the only shard
    (tmp_path / "ds" / "weight.npy").unlink()
    with pytest.raises(DataError, match="holds arrays x; choose one with a key"):
        open_source(tmp_path / "ds")


@pytest.mark.parametrize("bad,pattern", [
    (lambda d: np.zeros((2, 6, 5), np.float32), r"x_2\.npy: shape \(2, 6, 5\) does not fit .*x_0\.npy"),
    (lambda d: np.zeros((2, 6), np.float32), r"x_2\.npy: shape \(2, 6\) does not fit"),
    (lambda d: np.zeros((2, 6, 4), np.float64), r"x_2\.npy: dtype float64 differs from .*x_0\.npy \(float32\)"),
])
def test_inconsistent_shards_are_named(tmp_path, data, bad, pattern):
    d = write_shards(tmp_path / "d", data, [3, 3])
    np.save(d / "x_2.npy", bad(d))
    with pytest.raises(DataError, match=pattern):
        open_source(d)


def test_bad_inputs(tmp_path, data):
    with pytest.raises(DataError, match="no such file or directory"):
        open_source(tmp_path / "missing.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npy shards found"):
        open_source(tmp_path / "empty")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        open_source(tmp_path / "t.txt")
    (tmp_path / "fake.npy").write_text("not an array")
    with pytest.raises(DataError, match="fake.npy: not a .npy array"):
        open_source(tmp_path / "fake.npy")
    np.save(tmp_path / "cut.npy", data)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-100])
    with pytest.raises(DataError, match="cut.npy: truncated or corrupt"):
        open_source(tmp_path / "cut.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="has dtype <U1; expected a real numeric array"):
        open_source(tmp_path / "s.npy")
    np.save(tmp_path / "zero_d.npy", np.float64(1.0))
    with pytest.raises(DataError, match="0-d array has no batch axis"):
        open_source(tmp_path / "zero_d.npy")
    np.save(tmp_path / "one.npy", data)
    with pytest.raises(DataError, match="holds one array"):
        open_source(tmp_path / "one.npy", "x")


def test_non_finite_values_name_the_shard_and_items(tmp_path, data):
    d = write_shards(tmp_path / "d", data, [4, 7])
    bad = data[4:].copy()
    bad[5, 0, 0] = np.nan
    np.save(d / "x_1.npy", bad)
    src = open_source(d)  # headers only: fine
    np.testing.assert_array_equal(src.read(0, 8), data[:8])
    with pytest.raises(DataError, match=r"x_1\.npy \(items 4 to 6\) has 1 non-finite value"):
        src.read(8, 11)
    with pytest.raises(DataError, match=r"x_1\.npy has 1 non-finite value"):
        src.read()


def test_sources_pickle_and_wrap_arrays(tmp_path, data, monkeypatch):
    src = open_source(write_shards(tmp_path / "d", data, [5, 6]))
    back = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(back.read(2, 9), data[2:9])
    monkeypatch.chdir(tmp_path)  # relative paths are resolved when opened (Dask workers have their own cwd)
    rel = open_source("d")
    monkeypatch.chdir(tmp_path / "d")
    np.testing.assert_array_equal(rel.read(0, 2), data[:2])
    assert rel.shards[0].label == "d/x_0.npy"
    wrapped = as_source(data)
    assert wrapped.kind == "array" and as_source(wrapped) is wrapped
    np.testing.assert_array_equal(wrapped.read(1, 3), data[1:3])
    assert is_source_like(tmp_path) and is_source_like(src) and not is_source_like(data)
    assert isinstance(as_source(str(tmp_path / "d")), BatchSource)


def test_zarr_array_and_group(tmp_path, data):
    zarr = pytest.importorskip("zarr")
    arr = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, chunks=(3, 6, 4), dtype="float32")
    arr[:] = data
    src = open_source(tmp_path / "a.zarr")
    assert src.kind == "zarr" and src.align == 3 and src.shape == data.shape
    np.testing.assert_array_equal(src.read(2, 10), data[2:10])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(src)).read(), data)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    for name, value in (("x", data), ("weight", np.eye(4))):
        a = group.create_array(name, shape=value.shape, dtype=value.dtype) if hasattr(group, "create_array") \
            else group.create_dataset(name, shape=value.shape, dtype=value.dtype)
        a[:] = value
    np.testing.assert_array_equal(open_source(tmp_path / "g.zarr", "weight").read(), np.eye(4))
    with pytest.raises(DataError, match=r"Zarr group holds 2 arrays \(weight, x\)"):
        open_source(tmp_path / "g.zarr")
    with pytest.raises(DataError, match="no such array in the Zarr store"):
        open_source(tmp_path / "g.zarr", "grad_y")
