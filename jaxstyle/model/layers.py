"""VGG16's convolution layers: names, channels and grids, the facts every step shares.

Settings name layers (`config`), the weights file stores them (`weights`), the network runs
them (`vgg`), and the memory estimate counts their activations (`memory`); all read them here.
"""
from __future__ import annotations

from typing import Sequence

# (name, in_channels, out_channels) for every 3x3 convolution; a 2x2/2 max pool ends each block.
CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512), ("block5_conv2", 512, 512), ("block5_conv3", 512, 512),
)
LAYER_NAMES: tuple[str, ...] = tuple(name for name, _, _ in CONV_LAYERS)
LAYER_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    name: ((3, 3, cin, cout), (cout,)) for name, cin, cout in CONV_LAYERS
}
CHANNELS: dict[str, int] = {name: cout for name, _, cout in CONV_LAYERS}


def layer_index(name: str) -> int:
    """Position of a conv layer in the network (0 for block1_conv1)."""
    return LAYER_NAMES.index(name)


def pools_before(name: str) -> int:
    """Number of 2x2 max pools between the image and the output of layer `name`."""
    return int(name[len("block")]) - 1


def deepest(layers: Sequence[str]) -> str | None:
    """The requested layer furthest from the input, or None for no layers."""
    return max(layers, key=layer_index) if layers else None


def grid(hw: tuple[int, int], name: str) -> tuple[int, int]:
    """(height, width) of layer `name`'s activations for an (hw) image: each 'VALID' 2x2 pool
    halves a side, dropping an odd last row or column."""
    k = pools_before(name)
    return hw[0] >> k, hw[1] >> k


def upto(layers: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """The conv layers the network must run to reach every layer of `layers`."""
    last = deepest(layers)
    return CONV_LAYERS[: layer_index(last) + 1] if last else ()
