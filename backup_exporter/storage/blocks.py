"""The block-size schedule for Azure block blobs whose final size is unknown when the upload starts.

A block blob holds at most 50,000 blocks. A dump is streamed, so its size is only known at the end: a
fixed 4 MiB block would cap an archive at ~195 GiB, while a large fixed block would waste memory on every
small backup (each block in flight is held in memory). So blocks start small and double every
``DOUBLING_INTERVAL`` blocks up to a cap; with the defaults the first 20 GB go in 4 MiB blocks and the
50,000 blocks together hold more than 6 TiB.

Pure functions only.
"""

from __future__ import annotations

import base64

MiB = 1 << 20
TiB = 1 << 40

MAX_BLOCKS = 50_000  # Azure's limit of committed blocks per block blob
DEFAULT_BASE = 4 * MiB
DEFAULT_CAP = 256 * MiB  # Azure allows up to 4000 MiB per block; memory per block in flight is the limit
DOUBLING_INTERVAL = 5_000

# Azure requires every block id of a blob to have the same length (at most 64 bytes before base64).
# Ten digits is far more than MAX_BLOCKS needs and keeps ids short.
_ID_WIDTH = 10


def block_size_for(index: int, base: int = DEFAULT_BASE, cap: int = DEFAULT_CAP) -> int:
    """Return the size in bytes of block number `index` (0-based).

    The size is `base` doubled once every DOUBLING_INTERVAL blocks, never above `cap` (and never below
    `base`, should `cap` be the smaller). Raises ValueError for a negative index or a non-positive base.
    """
    if index < 0:
        raise ValueError(f"block index must be >= 0, got {index}")
    if base <= 0:
        raise ValueError(f"block base size must be > 0, got {base}")
    doublings = index // DOUBLING_INTERVAL
    # Cap the exponent before shifting so a huge index cannot build an enormous integer.
    limit = max(base, cap)
    size = base
    while doublings > 0 and size < limit:
        size <<= 1
        doublings -= 1
    return min(size, limit)


def capacity(blocks: int = MAX_BLOCKS, base: int = DEFAULT_BASE, cap: int = DEFAULT_CAP) -> int:
    """Return the total bytes that the first `blocks` blocks of the schedule hold."""
    total = 0
    index = 0
    # Sum whole doubling intervals at once: the size is constant within one.
    while index < blocks:
        step = min(DOUBLING_INTERVAL - index % DOUBLING_INTERVAL, blocks - index)
        total += step * block_size_for(index, base, cap)
        index += step
    return total


def block_id(index: int) -> str:
    """Return the Azure block id of block number `index`: base64 of a fixed-width decimal string.

    All ids have the same length, as Azure requires within one blob. Raises ValueError when the index is
    negative or too large for the fixed width.
    """
    if not 0 <= index < 10**_ID_WIDTH:
        raise ValueError(f"block index out of range: {index}")
    return base64.b64encode(f"{index:0{_ID_WIDTH}d}".encode("ascii")).decode("ascii")
