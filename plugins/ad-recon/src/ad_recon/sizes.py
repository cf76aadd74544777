"""Image sizes of the reconstruction models: read `image_size` and refuse sizes a network cannot take."""

from __future__ import annotations

from collections.abc import Sequence


def as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def check_multiple(model: str, size: tuple[int, int], multiple: int, minimum: int) -> None:
    """A clear error when a side is below `minimum` or not a multiple of `multiple` (the network's stride)."""
    height, width = size
    if min(height, width) < minimum or height % multiple or width % multiple:
        raise ValueError(f"{model} needs images whose height and width are multiples of {multiple} and at least "
                         f"{minimum} px (its encoder halves the image {multiple.bit_length() - 1} times), got "
                         f"{height}x{width}: set image_size accordingly")
