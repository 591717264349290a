"""Cluttered digits: deterministic from the seed, split by source image, digits on a cluttered canvas."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.data.cluttered import ClutterConfig, render_splits

SMALL = ClutterConfig(canvas=24, variants=1, digit_px=(10, 14), clutter=3, patch=4)


@pytest.mark.slow
def test_same_seed_same_images_other_seed_other_split():
    first, again, other = render_splits(0, SMALL), render_splits(0, SMALL), render_splits(1, SMALL)
    for (x, y), (x2, y2) in zip(first, again):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(first[0][0], other[0][0])


def test_splits_are_disjoint_by_source_image_and_stratified():
    from sklearn.datasets import load_digits

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = render_splits(0, SMALL)
    assert (len(train_y), len(val_y), len(test_y)) == (1078, 359, 360)  # 1,797 sources, 60/20/20, one variant
    assert train_x.shape[1:] == (1, 24, 24) and train_x.dtype == np.float32
    assert 0.0 <= train_x.min() and train_x.max() <= 1.0
    for y in (train_y, val_y, test_y):
        assert np.bincount(y, minlength=10).min() >= 0.8 * len(y) / 10
    assert len(load_digits().target) == len(train_y) + len(val_y) + len(test_y)


@pytest.mark.slow
def test_variants_multiply_each_split_and_clutter_adds_ink():
    plain = ClutterConfig(canvas=24, variants=2, digit_px=(10, 14), clutter=0, patch=4, noise=0.0)
    busy = ClutterConfig(canvas=24, variants=2, digit_px=(10, 14), clutter=8, patch=4, noise=0.0)
    (x_plain, y_plain), _, _ = render_splits(0, plain)
    (x_busy, _), _, _ = render_splits(0, busy)
    assert len(y_plain) == 2 * 1078 and np.array_equal(y_plain[::2], y_plain[1::2])
    assert (x_busy > 0.1).mean() > (x_plain > 0.1).mean()


@pytest.mark.slow
def test_load_dataset_serves_it_as_digits_cluttered():
    from compressor.data.datasets import load_dataset

    data = load_dataset("digits-cluttered", channels=1, image_size=None)
    plain = load_dataset("digits", channels=1, image_size=32)
    assert data.input_shape == (1, 32, 32) and data.num_classes == 10
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (3 * 1078, 3 * 359, 3 * 360)
    assert data.identity != plain.identity and data.split_identity != plain.split_identity
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
