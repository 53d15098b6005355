"""Minimal MNIST reader: IDX files, gzip-compressed (`*-ubyte.gz`) or not, pixels scaled to [0, 1]."""

import gzip
import os

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(directory: str, stem: str) -> np.ndarray:
    for name, opener in ((stem, open), (stem + ".gz", gzip.open)):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(f"neither {stem} nor {stem}.gz in {directory}")
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{stem}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load(directory: str, split: str = "test"):
    """(images float32 [N, 28, 28] in [0, 1], labels int64 [N])."""
    img_stem, lbl_stem = FILES[split]
    images = _read_idx(directory, img_stem).astype(np.float32) / np.float32(255.0)
    labels = _read_idx(directory, lbl_stem).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def default_dir() -> str:
    """The repository's data/mnist if it holds MNIST, else ../shared/data/mnist, else ./data/mnist."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "data", "mnist"), "../shared/data/mnist"):
        if os.path.isdir(cand) and any(f.startswith("t10k-images") for f in os.listdir(cand)):
            return os.path.normpath(cand)
    return os.path.join("data", "mnist")
