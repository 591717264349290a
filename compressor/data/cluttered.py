"""Cluttered digits: a harder set built from the same real images as `digits`, with room for a search to matter.

`digits` saturates: a plain CNN scores 99% and one test image decides every
comparison. This set follows the construction of Cluttered MNIST (Mnih et al.
2014; Jaderberg et al. 2015, "Spatial Transformer Networks"): each digit is
scaled, rotated and placed at a random spot of a larger canvas, clutter
patches cut from *other* digits are scattered over the canvas, and noise is
added. Recognising the digit means finding it among digit-like strokes, which
small networks do much worse than large ones.

Construction, deterministic from `seed`:

1. scikit-learn's 1,797 8x8 digits (16 grey levels, scaled to [0, 1]) are split
   by *source image* into train/val/test (60/20/20, stratified), before any
   rendering: no digit, and no clutter cut from a digit, crosses splits.
2. Each source image is rendered `variants` times on a `canvas` x `canvas`
   canvas: upsampled to a random size in `digit_px` (bilinear), rotated by a
   random angle in +-`max_rotation` degrees, pasted (max-composited) at a
   random position that keeps it whole.
3. `clutter` patches of `patch` x `patch` pixels, each cut at a random spot of
   a random other digit of the same split rendered at the same scale range,
   are max-composited at random positions.
4. Gaussian noise (`noise` std) is added and the image clipped to [0, 1].

The result is grey, `canvas` px square, float32 in [0, 1], with the digit's
label. Rendering takes about a second for the default 3 variants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ClutterConfig", "render_splits"]


@dataclass(frozen=True)
class ClutterConfig:
    """How the cluttered set is drawn; every field is part of the dataset's identity."""

    canvas: int = 32
    variants: int = 3
    digit_px: tuple[int, int] = (12, 20)
    max_rotation: float = 30.0
    clutter: int = 6
    patch: int = 6
    noise: float = 0.05

    def key(self) -> dict:
        return asdict(self)


def render_splits(seed: int = 0, config: ClutterConfig = ClutterConfig()
                  ) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Render the train, val and test splits.

    Args:
        seed: decides the split of the source images and every random draw of the rendering.
        config: canvas size, variants per source image, clutter and noise.

    Returns:
        ((train_x, train_y), (val_x, val_y), (test_x, test_y)); x float32 (N, 1, canvas, canvas) in [0, 1],
        y int64 (N,).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_i, rest = train_test_split(index, train_size=0.6, random_state=seed, stratify=labels)
    val_i, test_i = train_test_split(rest, test_size=0.5, random_state=seed, stratify=labels[rest])
    rng = np.random.default_rng(seed)
    return tuple(_render(images[part], labels[part], rng, config) for part in (train_i, val_i, test_i))


def _render(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: ClutterConfig):
    n = len(images) * config.variants
    out = np.zeros((n, 1, config.canvas, config.canvas), dtype=np.float32)
    out_labels = np.repeat(labels, config.variants)
    for k in range(n):
        canvas = out[k, 0]
        for _ in range(config.clutter):
            other = _transformed(images[rng.integers(len(images))], rng, config)
            top, left = rng.integers(0, other.shape[0] - config.patch + 1, size=2)
            piece = other[top:top + config.patch, left:left + config.patch]
            _paste(canvas, piece, rng)
        _paste(canvas, _transformed(images[k // config.variants], rng, config), rng)
        canvas += rng.normal(0.0, config.noise, size=canvas.shape).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out, out_labels


def _transformed(image: np.ndarray, rng: np.random.Generator, config: ClutterConfig) -> np.ndarray:
    """The 8x8 digit scaled to a random size and rotated by a random angle (zeros outside the digit)."""
    from scipy import ndimage

    size = int(rng.integers(config.digit_px[0], config.digit_px[1] + 1))
    scaled = ndimage.zoom(image, size / image.shape[0], order=1)
    angle = float(rng.uniform(-config.max_rotation, config.max_rotation))
    # reshape=True keeps the corners a rotation would otherwise cut off
    return np.clip(ndimage.rotate(scaled, angle, reshape=True, order=1), 0.0, 1.0)


def _paste(canvas: np.ndarray, piece: np.ndarray, rng: np.random.Generator) -> None:
    """Max-composite `piece` at a random position where it fits whole (cropped if larger than the canvas)."""
    height, width = (min(s, c) for s, c in zip(piece.shape, canvas.shape))
    piece = piece[:height, :width]
    top = int(rng.integers(0, canvas.shape[0] - height + 1))
    left = int(rng.integers(0, canvas.shape[1] - width + 1))
    np.maximum(canvas[top:top + height, left:left + width], piece,
               out=canvas[top:top + height, left:left + width])
