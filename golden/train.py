"""Train the reference digits CNN in NumPy (float32), fixed seed; writes the float weights.

    .venv/bin/python -m golden.train            # needs scikit-learn (the data set only)

Optimiser: Adam (beta1 0.9, beta2 0.999, eps 1e-8), mini-batches of ``BATCH`` images,
learning rate ``LR`` with a cosine decay to 0 over ``EPOCHS`` epochs, L2 weight decay ``WD``
on the weights (not the biases), He-normal initialisation, all from ``np.random.default_rng(SEED)``.
Augmentation: each training image is shifted by a random -1..1 pixel in x and y (zero fill)
with probability 1/2, which helps with only 1,438 training images.

The run is deterministic (about 20-40 s on 2 cores; a re-run gives bit-identical weights).

Output: ``golden/data/digits_cnn_float.npz`` (see :func:`golden.float_model.save_float`).
The quantized model is then made by ``.venv/bin/python -m golden.ptq`` (no scikit-learn).
Neither the tests nor ``make sim`` train: both files are committed.
"""

import argparse
import time

import numpy as np

from . import digits
from .float_model import REFERENCE_ARCH, init_params, loss_and_grads, predict, save_float

SEED = 1
EPOCHS = 40
BATCH = 32
LR = 3e-3
WD = 1e-4
FLOAT_FILE = digits.DATA_DIR / "digits_cnn_float.npz"


def _shift(x, rng):
    """Random +-1 pixel translation (zero fill) of half of the NHWC batch."""
    out = x.copy()
    n = len(x)
    dy = rng.integers(-1, 2, n)
    dx = rng.integers(-1, 2, n)
    keep = rng.random(n) < 0.5
    for i in np.flatnonzero(~keep):
        out[i] = np.roll(x[i], (dy[i], dx[i]), axis=(0, 1))
        if dy[i] == 1:
            out[i, 0] = 0
        elif dy[i] == -1:
            out[i, -1] = 0
        if dx[i] == 1:
            out[i, :, 0] = 0
        elif dx[i] == -1:
            out[i, :, -1] = 0
    return out


def train(epochs=EPOCHS, seed=SEED, verbose=True):
    x_tr, y_tr, x_te, y_te = digits.load_split()
    xf_tr, xf_te = digits.to_float(x_tr), digits.to_float(x_te)
    y_tr = y_tr.astype(np.int64)
    rng = np.random.default_rng(seed)
    arch = REFERENCE_ARCH
    params = init_params(arch, rng)
    m = {k: {t: np.zeros_like(v) for t, v in p.items()} for k, p in params.items()}
    v = {k: {t: np.zeros_like(v) for t, v in p.items()} for k, p in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    steps_per_epoch = -(-len(xf_tr) // BATCH)
    total = epochs * steps_per_epoch
    step = 0
    t0 = time.time()
    for ep in range(epochs):
        perm = rng.permutation(len(xf_tr))
        losses = []
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            xb = _shift(xf_tr[idx], rng)
            loss, grads = loss_and_grads(arch, params, xb, y_tr[idx], weight_decay=WD)
            losses.append(loss)
            step += 1
            lr = LR * 0.5 * (1 + np.cos(np.pi * (step - 1) / total))
            for name, p in params.items():
                for t in p:
                    g = grads[name][t]   # weight decay is already in the weight gradients
                    m[name][t] = b1 * m[name][t] + (1 - b1) * g
                    v[name][t] = b2 * v[name][t] + (1 - b2) * g * g
                    mh = m[name][t] / (1 - b1 ** step)
                    vh = v[name][t] / (1 - b2 ** step)
                    p[t] = (p[t] - lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        if verbose and (ep % 5 == 4 or ep == epochs - 1):
            acc_tr = (predict(arch, params, xf_tr) == y_tr).mean()
            acc_te = (predict(arch, params, xf_te) == y_te).mean()
            print(f"epoch {ep + 1:3d}  loss {np.mean(losses):.4f}  train {100 * acc_tr:.2f}%  "
                  f"test {100 * acc_te:.2f}%  ({time.time() - t0:.1f} s)")
    return arch, params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", default=str(FLOAT_FILE))
    args = ap.parse_args(argv)
    arch, params = train(args.epochs, args.seed)
    save_float(args.out, arch, params)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
