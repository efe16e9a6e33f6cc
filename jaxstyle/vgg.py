"""VGG16 feature extractor as a Flax module used as a pure function of (variables, image).

Input convention is Keras' "caffe" one: BGR channel order, ImageNet mean subtracted, 0..255
scale (see `preprocess.py`). Keras' `blockN_convM` outputs include the ReLU, so they equal
Caffe's `reluN_M`.

The convolution has a custom VJP: XLA:CPU emits the input-gradient convolution as a slow
naive loop when it runs inside `lax.while_loop` (optax's line search) unless the backward
kernel arrives pre-flipped in an ordinary HWIO layout. That kernel is computed once by
`prepare_variables` and passed in as the "backward" variable collection, so it is a jit
argument like the weights rather than something XLA re-derives inside the loop.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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

_DIMS = ("NHWC", "HWIO", "NHWC")


def layer_index(name: str) -> int:
    """Position of a conv layer in the network (0 for block1_conv1)."""
    return LAYER_NAMES.index(name)


def pools_before(name: str) -> int:
    """Number of 2x2 max pools between the image and the output of layer `name`."""
    return int(name[len("block")]) - 1


def deepest(layers: Sequence[str]) -> str | None:
    """The requested layer furthest from the input, or None for no layers."""
    return max(layers, key=layer_index) if layers else None


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array, kernel_bwd: jax.Array) -> jax.Array:
    """3x3 'SAME' cross-correlation, NHWC x HWIO; `kernel_bwd` = `backward_kernel(kernel)`."""
    return _conv(x, kernel)


def _conv3x3_fwd(x, kernel, kernel_bwd):
    return _conv(x, kernel), (x, kernel, kernel_bwd)


def _conv3x3_bwd(res, g):
    x, kernel, kernel_bwd = res
    dx = _conv(g.astype(kernel_bwd.dtype), kernel_bwd).astype(x.dtype)
    # The kernel gradient is exact but unused by style transfer, so XLA drops it there.
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)
    (dk,) = kernel_vjp(g)
    # The backward kernel is derived data: it gets no gradient of its own.
    return dx, dk, jnp.zeros_like(kernel_bwd)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def backward_kernel(kernel: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """The kernel whose SAME convolution is the input gradient: flipped in H, W; in/out swapped."""
    if isinstance(kernel, np.ndarray):
        return np.ascontiguousarray(np.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)))
    return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pool, 'VALID' (an odd last row/column is dropped), NHWC.

    Written as reshape + max: its gradient is a fused elementwise mask, which is much faster
    on XLA:CPU than the select-and-scatter that `reduce_window`'s gradient becomes.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv3x3(nn.Module):
    """One VGG convolution + bias + ReLU, with the pre-flipped backward kernel as a variable."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.he_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel_bwd = self.variable("backward", "kernel", lambda: backward_kernel(kernel)).value
        y = conv3x3(x.astype(self.dtype), kernel.astype(self.dtype), kernel_bwd.astype(self.dtype))
        return nn.relu(y + bias.astype(self.dtype))


class VGG16Features(nn.Module):
    """The VGG16 conv stack, returning the activations of `layers` and computing nothing deeper."""

    layers: tuple[str, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        last = deepest(self.layers)
        out: dict[str, jax.Array] = {}
        if last is None:
            return out
        for name, _, cout in CONV_LAYERS[: layer_index(last) + 1]:
            if name.endswith("conv1") and name != "block1_conv1":
                x = max_pool(x)
            x = Conv3x3(cout, dtype=self.dtype, name=name)(x)
            if name in self.layers:
                out[name] = x
        return out


def prepare_variables(params: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Flax variables for `VGG16Features` from {layer: {"kernel", "bias"}} arrays."""
    params = {name: {"kernel": jnp.asarray(p["kernel"]), "bias": jnp.asarray(p["bias"])}
              for name, p in params.items()}
    backward = {name: {"kernel": backward_kernel(p["kernel"])} for name, p in params.items()}
    return {"params": params, "backward": backward}


def features(variables: Mapping[str, Any], image: jax.Array, layers: Sequence[str],
             dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """Activations of `layers` for one preprocessed image (H, W, 3) or a batch (N, H, W, 3)."""
    batched = image.ndim == 4
    x = image if batched else image[None]
    out = VGG16Features(tuple(layers), dtype=dtype).apply(variables, x)
    return out if batched else {k: v[0] for k, v in out.items()}


def random_params(seed: int = 0, widths: Mapping[str, tuple[int, int]] | None = None) -> dict:
    """He-normal random VGG16 parameters (for tests and benchmarks without real weights)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, cin, cout in CONV_LAYERS:
        if widths is not None:
            cin, cout = widths[name]
        k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32) * np.sqrt(2.0 / (9 * cin))
        out[name] = {"kernel": k.astype(np.float32),
                     "bias": (0.01 * rng.standard_normal(cout)).astype(np.float32)}
    return out
