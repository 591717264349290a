"""Datasets: digits splits and label fractions, every data error path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.data.datasets import load_dataset
from compressor.errors import UserError

SMALL = dict(image_size=8, channels=1)  # the digits at their native 8 px: fast


def test_digits_split_is_stratified_seeded_and_label_fraction_hides_labels():
    a = load_dataset("digits", **SMALL, seed=1)
    b = load_dataset("digits", **SMALL, seed=1)
    c = load_dataset("digits", **SMALL, seed=2)
    assert torch.equal(a.train_x, b.train_x) and a.identity == b.identity
    assert a.identity != c.identity
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert torch.bincount(a.test_y).min() >= 30  # stratified: every class in the test split
    low = load_dataset("digits", **SMALL, seed=1, label_fraction=0.1)
    labelled = low.train_y >= 0
    assert 0.08 < float(labelled.float().mean()) < 0.12
    assert torch.bincount(low.train_y[labelled]).min() >= 5
    assert low.identity == a.identity  # same images: the teacher-logits cache is shared
    assert load_dataset("digits", image_size=32, channels=3).input_shape == (3, 32, 32)


def test_data_error_paths(tmp_path):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    mixed = tmp_path / "mixed"
    for label in ("a", "b"):
        (mixed / label).mkdir(parents=True)
        for i in range(6):
            size = 10 if i % 2 else 12
            Image.fromarray(np.full((size, size, 3), 40 * i, dtype=np.uint8)).save(mixed / label / f"{i}.png")
    with pytest.raises(UserError, match="mixed sizes"):
        load_dataset(f"imagefolder:{mixed}", image_size=None)
    folder = load_dataset(f"imagefolder:{mixed}", image_size=8, channels=3)
    assert folder.num_classes == 2 and folder.input_shape == (3, 8, 8)
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(UserError, match="needs arrays named 'x' and 'y'"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "ok.npz", x=np.random.default_rng(0).random((40, 8, 8)), y=np.arange(40) % 4)
    assert load_dataset(f"npz:{tmp_path / 'ok.npz'}", image_size=8, channels=1).num_classes == 4
    with pytest.raises(UserError, match="--data-root DIR"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet21k")
