"""analysis.budget: memory sizes, available memory, and chunks that fit a budget."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import budget
from analysis.budget import chunk_bounds, format_bytes, parse_memory, plan_chunks, working_memory


@pytest.mark.parametrize("text,expected", [
    ("512MB", 512 * 10**6), ("512mb", 512 * 10**6), ("512M", 512 * 10**6), ("1.5GiB", 3 * 2**29),
    ("2 KiB", 2048), ("100000", 100000), (100000, 100000), ("1kb", 1000), ("0.5 TB", 5 * 10**11),
    (" 64 MiB ", 64 * 2**20), ("7B", 7), (".5k", 500),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "0MB", "12PB", "1e3", "MB", "5 M B", True, "1,000"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_format_bytes():
    assert [format_bytes(v) for v in (0, 999, 1000, 2.5e6, 7.25e9, 3e12)] == [
        "0 B", "999 B", "1 kB", "2.5 MB", "7.25 GB", "3 TB"]


def test_available_memory_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    assert budget.available_memory() > 0
    assert budget.default_budget() >= 64 << 20


@given(length=st.integers(1, 400), rows=st.integers(1, 90),
       breaks=st.lists(st.integers(-5, 405), max_size=6), align=st.integers(1, 12))
def test_chunk_bounds_properties(length, rows, breaks, align):
    bounds = chunk_bounds(length, rows, breaks, align)
    assert bounds[0] == 0 and bounds[-1] == length
    sizes = np.diff(bounds)
    assert (sizes > 0).all() and (sizes <= rows).all()
    inner = {b for b in breaks if 0 < b < length}
    assert inner <= set(bounds)  # no chunk crosses a break
    if rows >= align > 1:  # storage chunks are never split, except at a break or the end
        segment_ends = sorted(inner | {length})
        for a in bounds[:-1]:
            start = max([0] + [e for e in segment_ends if e <= a])
            assert (a - start) % align == 0


def test_plan_chunks_rows_and_error():
    plan = plan_chunks(1000, budget=10_000, fixed=1_000, per_item=100, workers=2, reserve=2_000)
    assert plan.rows == (4_000 - 1_000) // 100 and sum(plan.chunks) == 1000 and max(plan.chunks) <= plan.rows
    assert plan_chunks(5, budget=10**9, fixed=0, per_item=1).chunks == (5,)
    with pytest.raises(ValueError, match=r"memory budget 1 kB is too small.*needs 3.2 kB"):
        plan_chunks(10, budget=1000, fixed=500, per_item=1000, workers=2, reserve=200)


def test_working_memory_measures_per_item_allocation():
    fixed_block = np.ones(50_000)

    def run(k):
        per_item, fixed = np.ones((k, 100_000)), fixed_block.copy()  # both alive at the peak
        return per_item.sum() + fixed.sum()

    fixed, per_item = working_memory(run)
    assert 0.95 * 800_000 <= per_item <= 1.1 * 800_000
    assert 0.9 * 400_000 <= fixed <= 1.5 * 400_000
    assert working_memory(lambda k: None, least_per_item=123)[1] == 123
