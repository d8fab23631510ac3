"""The MNIST data layer: IDX files, and finding MNIST on disk, in a cache or online.

The entry point is :func:`load_mnist`; :func:`split_validation` holds out a validation set.
"""

from segdend.data.idx import idx_bytes, read_images, read_labels, write_idx
from segdend.data.sources import MNIST, default_cache_dir, load_mnist, split_validation

__all__ = [
    "MNIST",
    "default_cache_dir",
    "idx_bytes",
    "load_mnist",
    "read_images",
    "read_labels",
    "split_validation",
    "write_idx",
]
