"""The reference data set: scikit-learn's bundled handwritten digits, and its fixed split.

``sklearn.datasets.load_digits`` ships 1,797 greyscale 8x8 images of the digits 0-9 inside the
package (no download); every pixel is an integer grey level ``p`` in ``0..16``.

The split is written down here and nowhere else::

    SPLIT_SEED = 2024, TEST_FRACTION = 0.2, stratified by class:
    rng = numpy.random.default_rng(SPLIT_SEED)
    for c in 0..9 (in order):
        idx      = indices of class c, ascending
        perm     = rng.permutation(len(idx))
        n_test   = round(TEST_FRACTION * len(idx))
        test    += idx[perm[:n_test]];  train += idx[perm[n_test:]]
    both index lists are then sorted ascending.

This gives 1,438 training and 359 test images. The calibration set for post-training
quantization is the first ``CALIB_SIZE`` training images of a seeded permutation
(``CALIB_SEED``) of the training set.

Float input of the network: ``x = p / 16`` in ``[0, 1]``, layout NHWC ``(N, 8, 8, 1)``.
int8 input of the network: ``q = 15 * p - 128``, i.e. scale ``1/240`` and zero point ``-128``,
which represents every grey level exactly (``(q + 128) / 240 = p / 16``) with integer
arithmetic only.

scikit-learn is only needed by :func:`load_all` (training, regenerating the committed data).
Inference and the tests use the committed files in ``golden/data/``:

* ``digits_test.npz``:  ``images`` uint8 (359, 8, 8), ``labels`` uint8 (359,),
  ``indices`` int64 (359,) (rows of ``load_digits()``).
* ``digits_calib.npz``: the same three keys for the calibration images.

Regenerate them with ``.venv/bin/python -m golden.digits`` (needs scikit-learn).
"""

from pathlib import Path

import numpy as np

__all__ = [
    "DATA_DIR", "SPLIT_SEED", "TEST_FRACTION", "CALIB_SEED", "CALIB_SIZE",
    "INPUT_SCALE", "INPUT_ZERO_POINT",
    "load_all", "split_indices", "load_split", "load_test", "load_calibration",
    "to_float", "to_int8", "write_data_files",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLIT_SEED = 2024
TEST_FRACTION = 0.2
CALIB_SEED = 7
CALIB_SIZE = 256
MAX_GREY = 16
#: Quantization of the network input: q = 15 * p - 128 represents p / 16 exactly.
INPUT_SCALE = 1.0 / 240.0
INPUT_ZERO_POINT = -128

TEST_FILE = DATA_DIR / "digits_test.npz"
CALIB_FILE = DATA_DIR / "digits_calib.npz"


def load_all():
    """All 1,797 images ``uint8 (N, 8, 8)`` and labels ``uint8 (N,)``; needs scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("scikit-learn is needed to load the full digits data set (training "
                          "only): .venv/bin/pip install scikit-learn") from e
    d = load_digits()
    images = np.asarray(d.images)
    if images.shape[1:] != (8, 8) or images.min() < 0 or images.max() > MAX_GREY:
        raise ValueError(f"unexpected digits data: shape {images.shape}, "
                         f"range [{images.min()}, {images.max()}]")
    return images.astype(np.uint8), np.asarray(d.target).astype(np.uint8)


def split_indices(labels, seed=SPLIT_SEED, test_fraction=TEST_FRACTION):
    """Stratified ``(train_idx, test_idx)``, both sorted, as documented in the module."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = rng.permutation(len(idx))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[perm[:n_test]])
        train.append(idx[perm[n_test:]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_split():
    """``(x_train, y_train, x_test, y_test)`` as uint8 images and labels; needs scikit-learn."""
    images, labels = load_all()
    tr, te = split_indices(labels)
    return images[tr], labels[tr], images[te], labels[te]


def calibration_indices(n_train, seed=CALIB_SEED, size=CALIB_SIZE):
    """Positions (into the training set) of the calibration images."""
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:size])


def _load_npz(path):
    with np.load(path, allow_pickle=False) as f:
        return f["images"], f["labels"]


def load_test():
    """The committed test images ``uint8 (N, 8, 8)`` and labels ``uint8 (N,)``."""
    return _load_npz(TEST_FILE)


def load_calibration():
    """The committed calibration images (a subset of the training set) and their labels."""
    return _load_npz(CALIB_FILE)


def to_float(images):
    """uint8 grey levels ``(N, 8, 8)`` -> float32 NHWC ``(N, 8, 8, 1)`` in [0, 1]."""
    images = np.asarray(images)
    return (images.astype(np.float32) / MAX_GREY)[..., None]


def to_int8(images):
    """uint8 grey levels ``(N, 8, 8)`` -> int8 NHWC ``(N, 8, 8, 1)``: ``15 * p - 128`` (integer)."""
    images = np.asarray(images)
    if images.dtype.kind not in "iu":
        raise ValueError(f"images must be integer grey levels, got dtype {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > MAX_GREY):
        raise ValueError(f"grey levels must be in [0, {MAX_GREY}], got "
                         f"[{images.min()}, {images.max()}]")
    return (images.astype(np.int16) * 15 - 128).astype(np.int8)[..., None]


def write_data_files():
    """Write ``digits_test.npz`` and ``digits_calib.npz`` (needs scikit-learn)."""
    images, labels = load_all()
    tr, te = split_indices(labels)
    cal = tr[calibration_indices(len(tr))]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for path, idx in ((TEST_FILE, te), (CALIB_FILE, cal)):
        np.savez_compressed(path, images=images[idx], labels=labels[idx],
                            indices=idx.astype(np.int64))
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
              f": {len(idx)} images")
    return len(tr), len(te)


if __name__ == "__main__":
    n_train, n_test = write_data_files()
    print(f"split: {n_train} train / {n_test} test (seed {SPLIT_SEED})")
