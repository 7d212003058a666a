"""The digits tasks and the bilinear resize."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from analysis.finetune import digit_tasks, resize_bilinear  # noqa: E402


def test_tasks_are_disjoint_fixed_and_standardized():
    pre, ada = digit_tasks(image_size=16)
    assert pre.digits == (0, 1, 2, 3, 4) and ada.digits == (5, 6, 7, 8, 9)
    for task in (pre, ada):
        assert task.train_images.shape[1:] == (1, 16, 16) and task.train_images.dtype == np.float32
        assert set(task.train_labels.tolist()) == set(task.test_labels.tolist()) == set(range(5))
        n = task.train_labels.size + task.test_labels.size
        assert task.test_labels.size == pytest.approx(0.25 * n, abs=3)
        # stratified: every class keeps about its share in the test split
        counts = np.bincount(task.test_labels, minlength=5) / task.test_labels.size
        assert np.all(np.abs(counts - 0.2) < 0.03)
    assert pre.train_labels.size + pre.test_labels.size + ada.train_labels.size + ada.test_labels.size == 1797
    assert abs(float(pre.train_images.mean())) < 1e-5 and float(pre.train_images.std()) == pytest.approx(1.0, 1e-4)
    again, _ = digit_tasks(image_size=16)
    np.testing.assert_array_equal(again.test_images, pre.test_images)
    other, _ = digit_tasks(image_size=16, split_seed=1)
    assert not np.array_equal(other.test_labels, pre.test_labels) or not np.array_equal(
        other.test_images, pre.test_images)


def test_tasks_options_and_errors():
    pre, ada = digit_tasks(image_size=8, pretrain_digits=(3, 1), adapt_digits=(7,), dtype="float64")
    assert pre.num_classes == 2 and pre.digits == (3, 1) and pre.train_images.dtype == np.float64
    assert ada.num_classes == 1 and set(ada.train_labels.tolist()) == {0}
    with pytest.raises(ValueError, match="overlap"):
        digit_tasks(pretrain_digits=(1, 2), adapt_digits=(2, 3))
    with pytest.raises(ValueError, match="distinct"):
        digit_tasks(pretrain_digits=(1, 1))
    with pytest.raises(ValueError, match="image_size"):
        digit_tasks(image_size=4)
    with pytest.raises(ValueError, match="test_fraction"):
        digit_tasks(test_fraction=1.0)


def test_resize_bilinear_matches_torch_and_keeps_constants():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 8, 8))
    out = resize_bilinear(img, 32)
    assert out.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(resize_bilinear(np.full((5, 5), 3.0), 12), 3.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(resize_bilinear(img, 8), img, rtol=0, atol=1e-14)  # same size: identity
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.interpolate(torch.tensor(img), size=(32, 32), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        resize_bilinear(np.ones(3), 4)
