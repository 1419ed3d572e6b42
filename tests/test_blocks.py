"""The block-size schedule for Azure block blobs of unknown size."""

from __future__ import annotations

import base64
import itertools

import pytest

from backup_exporter.storage.blocks import (
    DEFAULT_BASE,
    DEFAULT_CAP,
    MAX_BLOCKS,
    MiB,
    TiB,
    block_id,
    block_size_for,
    capacity,
)


def test_fifty_thousand_blocks_hold_at_least_four_tebibytes() -> None:
    assert capacity() >= 4 * TiB
    assert capacity(MAX_BLOCKS) == sum(block_size_for(i) for i in range(MAX_BLOCKS))


def test_block_sizes_start_at_the_base_never_decrease_and_stop_at_the_cap() -> None:
    sizes = [block_size_for(i) for i in range(MAX_BLOCKS)]
    assert sizes[0] == DEFAULT_BASE == 4 * MiB
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert max(sizes) == DEFAULT_CAP
    assert block_size_for(10**9) == DEFAULT_CAP


def test_the_first_twenty_gigabytes_use_base_sized_blocks() -> None:
    assert block_size_for(4_999) == DEFAULT_BASE
    assert block_size_for(5_000) == 2 * DEFAULT_BASE


def test_a_custom_base_and_cap_shape_the_schedule() -> None:
    assert block_size_for(0, base=1 * MiB, cap=2 * MiB) == 1 * MiB
    assert block_size_for(49_999, base=1 * MiB, cap=2 * MiB) == 2 * MiB
    assert capacity(10, base=100, cap=100) == 1000
    # A cap below the base never shrinks blocks below the base.
    assert block_size_for(20_000, base=8 * MiB, cap=4 * MiB) == 8 * MiB


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        block_size_for(-1)
    with pytest.raises(ValueError):
        block_size_for(0, base=0)
    with pytest.raises(ValueError):
        block_id(-1)


def test_block_ids_are_base64_of_equal_length_and_unique() -> None:
    ids = [block_id(i) for i in range(MAX_BLOCKS)]
    assert len({len(i) for i in ids}) == 1
    assert len(set(ids)) == MAX_BLOCKS
    decoded = base64.b64decode(ids[123], validate=True)
    assert decoded == b"0000000123"
    assert len(decoded) <= 64  # Azure's limit before encoding


def test_the_smallest_configurable_block_size_still_fits_four_tebibytes() -> None:
    from backup_exporter import config

    assert capacity(base=2 * MiB) >= 4 * TiB
    with pytest.raises(config.ConfigError, match="block_size': must be between 2MiB and 256MiB"):
        config.from_mapping({"storage": {"type": "local", "path": "/b", "block_size": "1MiB"},
                             "plans": {"p": {"mongodb_uri": "mongodb://h/"}}}, {}, "t")
