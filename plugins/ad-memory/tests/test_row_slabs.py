"""RowSlabs: PatchCore's bank store, rows appended group by group and taken out once."""

from __future__ import annotations

import pytest
import torch
from ad_memory.row_slabs import RowSlabs


def test_rows_come_back_in_order_across_slab_boundaries() -> None:
    store = RowSlabs(slab_bytes=5 * 4 * 3)  # 5 rows of 3 float32 per slab
    parts = [torch.randn(n, 3) for n in (2, 7, 0, 1, 11)]
    for part in parts:
        store.append(part)
    assert len(store) == 21
    torch.testing.assert_close(store.take(), torch.cat(parts), rtol=0, atol=0)


def test_take_empties_the_store_and_a_new_fill_starts_at_the_first_row() -> None:
    store = RowSlabs(slab_bytes=64)
    store.append(torch.ones(9, 2))
    store.take()
    assert len(store) == 0
    with pytest.raises(ValueError, match="no rows"):
        store.take()
    store.append(torch.full((3, 2), 2.0))
    assert torch.equal(store.take(), torch.full((3, 2), 2.0))


def test_rows_of_another_width_are_refused() -> None:
    store = RowSlabs()
    store.append(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape"):
        store.append(torch.zeros(2, 5))
