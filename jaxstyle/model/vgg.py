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

from functools import partial
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.model.layers import CONV_LAYERS, LAYER_NAMES, LAYER_SHAPES, deepest, layer_index, upto  # noqa: F401

_DIMS = ("NHWC", "HWIO", "NHWC")


# Precision of the convolutions and matrix products: XLA's three levels (on TPU "default" is one
# bfloat16 pass, "high" three, "highest" six; on Ampere and later GPUs "default" is TF32; XLA:CPU
# always computes float32), and two emulations of the TPU's passes for measuring their effect on
# a CPU: "bf16" (operands rounded to bfloat16, products accumulated in float32) and "bf16x3".
PRECISIONS = {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    hi = a.astype(jnp.bfloat16)
    return hi, (a - hi.astype(a.dtype)).astype(jnp.bfloat16)


def product(op, a: jax.Array, b: jax.Array, precision: str = "default") -> jax.Array:
    """op(a, b, precision=..., preferred_element_type=...) for a bilinear op (a convolution, an
    einsum) at `precision`, emulated on the CPU for "bf16" and "bf16x3"."""
    if precision == "bf16":
        return op(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), None, jnp.float32).astype(a.dtype)
    if precision == "bf16x3":
        (ah, al), (bh, bl) = _split(a), _split(b)
        f32 = jnp.float32
        return (op(ah, bh, None, f32) + op(ah, bl, None, f32) + op(al, bh, None, f32)).astype(a.dtype)
    return op(a, b, PRECISIONS[precision], None)


def _conv(x: jax.Array, kernel: jax.Array, precision: str = "default") -> jax.Array:
    return product(lambda a, b, p, t: jax.lax.conv_general_dilated(
        a, b, (1, 1), "SAME", dimension_numbers=_DIMS, precision=p, preferred_element_type=t),
        x, kernel, precision)


# Winograd F(4x4, 3x3) (Lavin & Gray 2016): 4x4 outputs from 6x6 input tiles with 36
# multiplications per channel pair instead of 144, i.e. 4x fewer multiply-adds than a direct
# 3x3 convolution, at the cost of transforming tiles in and out (2.25x the activations).
# The transforms are written as explicit adds with shared subexpressions: XLA:CPU fuses them
# well, where small matrix products over the tile axis ran several times slower.
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)


def _input_transform(d: list[jax.Array]) -> list[jax.Array]:
    """Bᵀd along one tile axis, Bᵀ = [[4,0,-5,0,1,0], [0,-4,-4,1,1,0], [0,4,-4,-1,1,0],
    [0,-2,-1,2,1,0], [0,2,-1,-2,1,0], [0,4,0,-5,0,1]]."""
    d0, d1, d2, d3, d4, d5 = d
    a, b, e, f = d4 - 4 * d2, d3 - 4 * d1, d4 - d2, 2 * (d3 - d1)
    return [4 * d0 - 5 * d2 + d4, a + b, a - b, e + f, e - f, 4 * d1 - 5 * d3 + d5]


def _output_transform(m: list[jax.Array]) -> list[jax.Array]:
    """Aᵀm along one tile axis, Aᵀ = [[1,1,1,1,1,0], [0,1,-1,2,-2,0], [0,1,1,4,4,0],
    [0,1,-1,8,-8,1]]."""
    m0, m1, m2, m3, m4, m5 = m
    a, b, e, f = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return [m0 + a + e, b + 2 * f, a + 4 * e, b + 8 * f + m5]


def winograd_kernel(kernel: np.ndarray) -> np.ndarray:
    """The (6, 6, in, out) Winograd transform of a (3, 3, in, out) kernel, as `winograd_conv`
    wants it: element [b, a] is (G k Gᵀ)[a, b]. Computed on the host, once per run."""
    gk = np.tensordot(_G, np.asarray(kernel, np.float32), axes=(1, 0))  # (6a, 3, in, out)
    return np.ascontiguousarray(np.transpose(np.tensordot(gk, _G, axes=(1, 1)), (3, 0, 1, 2)))


def winograd_conv(x: jax.Array, u: jax.Array, precision: str = "default") -> jax.Array:
    """3x3 'SAME' cross-correlation by Winograd F(4x4, 3x3), given u = `winograd_kernel(k)`."""
    n, h, w, c = x.shape
    k = u.shape[-1]
    th, tw = -(-h // 4), -(-w // 4)
    xp = jnp.pad(x, ((0, 0), (1, 4 * th - h + 1), (1, 4 * tw - w + 1), (0, 0)))
    r = jnp.stack(_input_transform([xp[:, i:i + 4 * th:4] for i in range(6)]), 0)  # rows a
    v = jnp.stack(_input_transform([r[:, :, :, j:j + 4 * tw:4] for j in range(6)]), 0)  # cols b
    m = product(lambda a, b, p, t: jnp.einsum("xtc,xck->xtk", a, b, precision=p, preferred_element_type=t),
                v.reshape(36, n * th * tw, c), u.reshape(36, c, k), precision)
    m = m.reshape(6, 6, n, th, tw, k)  # [b, a, ...]
    ya = jnp.stack(_output_transform([m[:, i] for i in range(6)]), 0)  # [p, b, ...]
    y = jnp.stack(_output_transform([ya[:, j] for j in range(6)]), 0)  # [q, p, ...]
    y = jnp.transpose(y, (2, 3, 1, 4, 0, 5))  # (n, th, p, tw, q, k)
    return y.reshape(n, 4 * th, 4 * tw, k)[:, :h, :w]


def use_winograd(pixels: int, cin: int, policy: str, platform: str, dtype: str = "float32") -> bool:
    """Whether a convolution over `pixels` positions with `cin` input channels uses Winograd.

    policy "auto" uses it on CPU where it measured faster on XLA:CPU (2 cores, float32): at
    least 512 input channels (0.38-0.62x the direct time), or at least 256 on grids of up to
    64x64 pixels (0.39-0.55x). Elsewhere the tile transforms no longer fit in cache and the
    direct convolution, already near the CPU's peak, wins. Accelerators use direct, and so
    does bfloat16 (the transforms' coefficients up to 8 cost bfloat16 too much precision).
    """
    if policy in ("direct", "winograd"):
        return policy == "winograd"
    if platform != "cpu" or dtype != "float32":
        return False
    return cin >= 512 or (cin >= 256 and pixels <= 64 * 64)


def winograd_plan(layers: Sequence[str], shape: tuple[int, ...], policy: str = "auto",
                  platform: str | None = None, dtype: str = "float32") -> dict[str, tuple[bool, bool]]:
    """{layer: (forward, backward)}: which convolutions of the network up to the deepest of
    `layers` use Winograd for an input of `shape` ((H, W, 3) or (N, H, W, 3))."""
    platform = platform or jax.default_backend()
    last = deepest(layers)
    if last is None:
        return {}
    n = shape[0] if len(shape) == 4 else 1
    h, w = shape[-3], shape[-2]
    plan = {}
    for name, cin, cout in CONV_LAYERS[: layer_index(last) + 1]:
        if name.endswith("conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        fwd = use_winograd(n * h * w, cin, policy, platform, dtype)
        bwd = use_winograd(n * h * w, cout, policy, platform, dtype) and name != "block1_conv1"
        if fwd or bwd:
            plan[name] = (fwd, bwd)
    return plan


def add_winograd(variables: Mapping[str, Any], plan: Mapping[str, tuple[bool, bool]]) -> dict:
    """`variables` plus the transformed kernels that `plan` asks for (collection "winograd")."""
    out = {k: v for k, v in variables.items() if k != "winograd"}
    wino = {}
    for name, (fwd, bwd) in plan.items():
        entry = {}
        if fwd:
            entry["forward"] = winograd_kernel(variables["params"][name]["kernel"])
        if bwd:
            entry["backward"] = winograd_kernel(variables["backward"][name]["kernel"])
        wino[name] = entry
    if wino:
        out["winograd"] = wino
    return out


def _conv_with(x: jax.Array, operand: jax.Array, precision: str) -> jax.Array:
    # A (6, 6, in, out) operand is a Winograd-transformed kernel, a (3, 3, in, out) one a kernel.
    return winograd_conv(x, operand, precision) if operand.shape[0] == 6 else _conv(x, operand, precision)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def conv3x3(x: jax.Array, kernel: jax.Array, forward: jax.Array, backward: jax.Array,
            precision: str = "default") -> jax.Array:
    """3x3 'SAME' cross-correlation of x (NHWC) with `kernel` (HWIO).

    `forward` computes it: the kernel itself, or `winograd_kernel(kernel)`. `backward` computes
    the input gradient: `backward_kernel(kernel)` or its Winograd transform.
    """
    return _conv_with(x, forward, precision)


def _conv3x3_fwd(x, kernel, forward, backward, precision):
    return _conv_with(x, forward, precision), (x, kernel, forward, backward)


def _conv3x3_bwd(precision, res, g):
    x, kernel, forward, backward = res
    dx = _conv_with(g.astype(backward.dtype), backward, precision).astype(x.dtype)
    # The kernel gradient is exact but unused by style transfer, so XLA drops it there.
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)
    (dk,) = kernel_vjp(g)
    # The forward and backward operands are derived data: no gradient of their own.
    return dx, dk, jnp.zeros_like(forward), jnp.zeros_like(backward)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def backward_kernel(kernel: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """The kernel whose SAME convolution is the input gradient: flipped in H, W; in/out swapped."""
    if isinstance(kernel, np.ndarray):
        return np.ascontiguousarray(np.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)))
    return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def pool(x: jax.Array, kind: str = "max", impl: str = "reshape") -> jax.Array:
    """2x2 stride-2 pool of `kind` ("max" or "avg") written the way that suits the platform:
    "reshape" (XLA:CPU, see `max_pool`) or "window" (`lax.reduce_window`: on TPUs the 6-D
    reshape pads badly in the tile layouts, 41% of an evaluation by XLA:TPU's cost model)."""
    if impl == "reshape":
        return max_pool(x) if kind == "max" else avg_pool(x)
    with jax.named_scope("pool"):
        dims = (1, 2, 2, 1)
        if kind == "max":
            # (numpy scalars: a concrete identity makes it reduce_window_max, which has a gradient)
            return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, dims, dims, "VALID")
        total = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, dims, dims, "VALID")
        return total * jnp.asarray(0.25, x.dtype)


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pool, 'VALID' (an odd last row/column is dropped), NHWC.

    Written as reshape + max: its gradient is a fused elementwise mask, which is much faster
    on XLA:CPU than the select-and-scatter that `reduce_window`'s gradient becomes.
    """
    with jax.named_scope("pool"):
        return _windows(x).max(axis=(2, 4))


def avg_pool(x: jax.Array) -> jax.Array:
    """2x2 stride-2 average pool, 'VALID', NHWC (Gatys et al. used it for image synthesis)."""
    with jax.named_scope("pool"):
        return _windows(x).mean(axis=(2, 4))


def _windows(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def region(x: jax.Array, hw: jax.Array | None, pools: int = 0) -> jax.Array | None:
    """(N, H, W, 1) booleans: True inside each image's real region of x (N, H, W, C), `hw`
    (N, 2) halved `pools` times (a pool's floor included); None when `hw` is None.

    Images padded to a shape bucket run the network masked after every layer, so each layer's
    activations equal those of the unpadded image, where 'SAME' convolutions pad with zeros.
    """
    if hw is None:
        return None
    h, w = hw[:, 0] >> pools, hw[:, 1] >> pools
    rows = jnp.arange(x.shape[1])[None, :] < h[:, None]
    cols = jnp.arange(x.shape[2])[None, :] < w[:, None]
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def mask(x: jax.Array, hw: jax.Array | None, pools: int = 0) -> jax.Array:
    """x with zeros outside each image's real region (see `region`)."""
    keep = region(x, hw, pools)
    return x if keep is None else jnp.where(keep, x, jnp.zeros((), x.dtype))


@jax.custom_jvp
def masked_relu(y: jax.Array, keep: jax.Array) -> jax.Array:
    """ReLU, and zero outside `keep`: one array for the backward pass to keep, the output (a
    separate mask after the ReLU made XLA keep three arrays per layer instead of two)."""
    return jnp.where(keep & (y > 0), y, jnp.zeros((), y.dtype))


@masked_relu.defjvp
def _masked_relu_jvp(primals, tangents):
    y, keep = primals
    dy, _ = tangents
    out = masked_relu(y, keep)
    return out, jnp.where(out > 0, dy, jnp.zeros((), dy.dtype))


class Conv3x3(nn.Module):
    """One VGG convolution + bias + ReLU.

    Besides its kernel and bias it reads derived variables: the pre-flipped backward kernel
    ("backward"), and Winograd-transformed kernels ("winograd", see `add_winograd`) for the
    directions that should use Winograd: their presence is what selects the algorithm.
    """

    features: int
    dtype: Any = jnp.float32
    precision: str = "default"

    @nn.compact
    def __call__(self, x: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.he_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel_bwd = self.variable("backward", "kernel", lambda: backward_kernel(kernel)).value
        forward = (self.get_variable("winograd", "forward")
                   if self.has_variable("winograd", "forward") else kernel)
        backward = (self.get_variable("winograd", "backward")
                    if self.has_variable("winograd", "backward") else kernel_bwd)
        d = self.dtype
        y = conv3x3(x.astype(d), kernel.astype(d), forward.astype(d), backward.astype(d),
                    self.precision) + bias.astype(d)
        return nn.relu(y) if keep is None else masked_relu(y, keep)


class VGG16Features(nn.Module):
    """The VGG16 conv stack, returning the activations of `layers` and computing nothing deeper.

    With `remat`, each block is rematerialized (see `remat_block`): only its input is kept for
    the backward pass, which recomputes the block's inner activations, trading compute for
    memory. `pooling` is "max" (VGG16's own) or "avg".
    """

    layers: tuple[str, ...]
    dtype: Any = jnp.float32
    remat: bool = False
    pooling: str = "max"
    precision: str = "default"
    pool_impl: str = "reshape"  # see `pool`

    @nn.compact
    def __call__(self, x: jax.Array, hw: jax.Array | None = None) -> dict[str, jax.Array]:
        last = deepest(self.layers)
        if last is None:
            return {}
        blocks: dict[int, list[tuple[str, int]]] = {}
        for name, _, cout in upto(self.layers):
            blocks.setdefault(int(name[len("block")]), []).append((name, cout))
        out: dict[str, jax.Array] = {}
        x = mask(x, hw)
        for i, convs in enumerate(blocks.values()):
            spec = _BlockSpec(tuple(convs), tuple(n for n, _ in convs if n in self.layers),
                              pool=self.pooling if i + 1 < len(blocks) else None, dtype=self.dtype,
                              pools=i, precision=self.precision, pool_impl=self.pool_impl)
            if self.remat:
                names = {n for n, _ in convs}
                own = {col: {n: v for n, v in tree.items() if n in names}
                       for col, tree in self.variables.items()}
                x, taps = remat_block(own, x, hw, spec)
            else:
                x, taps = _block(self, x, hw, spec)
            out.update(zip(spec.wanted, taps))
        return out


class _BlockSpec(NamedTuple):
    """One VGG block: its convolutions, which of them to return, the pool that ends it (None,
    "max" or "avg"), and how many pools come before it."""

    convs: tuple[tuple[str, int], ...]
    wanted: tuple[str, ...]
    pool: str | None
    dtype: Any
    pools: int
    precision: str = "default"
    pool_impl: str = "reshape"


def _block(module: nn.Module, x: jax.Array, hw: jax.Array | None,
           spec: _BlockSpec) -> tuple[jax.Array, tuple]:
    """One VGG block's convolutions (children of `module`, named by layer), then its pool."""
    taps = []
    keep = region(x, hw, spec.pools)
    for name, cout in spec.convs:
        x = Conv3x3(cout, dtype=spec.dtype, precision=spec.precision, name=name, parent=module)(x, keep)
        if name in spec.wanted:
            taps.append(x)
    if spec.pool is not None:
        x = mask(pool(x, spec.pool, spec.pool_impl), hw, spec.pools + 1)
    return x, tuple(taps)


class _Block(nn.Module):
    """A block as a module of its own, for `remat_block`; its variables keep the layer names."""

    spec: _BlockSpec

    @nn.compact
    def __call__(self, x: jax.Array, hw: jax.Array | None) -> tuple[jax.Array, tuple]:
        return _block(self, x, hw, self.spec)


def _apply_block(variables: Mapping[str, Any], x: jax.Array, hw: jax.Array | None, spec: _BlockSpec):
    return _Block(spec).apply(variables, x, hw)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def remat_block(variables: Mapping[str, Any], x: jax.Array, hw: jax.Array | None, spec: _BlockSpec):
    """A VGG block whose backward pass recomputes its activations from its input.

    Not `jax.checkpoint`: XLA:CPU drops the optimization barriers that keep its recomputation
    apart, and common-subexpression elimination then merges the recomputation with the
    forward pass, so every activation stays alive and nothing is saved. Here the
    recomputation's input depends on the incoming cotangent, which nothing can merge away.
    """
    return _apply_block(variables, x, hw, spec)


def _remat_fwd(variables, x, hw, spec):
    return _apply_block(variables, x, hw, spec), (variables, x, hw)


def _remat_bwd(spec, residuals, g):
    variables, x, hw = residuals
    # An element of every cotangent (some may be constant zeros): finite unless the gradient
    # is already lost, in which case NaN just propagates.
    probe = sum(leaf.reshape(-1)[0].astype(jnp.float32) for leaf in jax.tree_util.tree_leaves(g))
    x = jnp.where(jnp.isfinite(probe), x, jnp.asarray(jnp.nan, x.dtype))
    _, vjp = jax.vjp(lambda v, xx: _apply_block(v, xx, hw, spec), variables, x)
    dv, dx = vjp(g)
    return dv, dx, None if hw is None else np.zeros(hw.shape, jax.dtypes.float0)


remat_block.defvjp(_remat_fwd, _remat_bwd)


def prepare_variables(params: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Flax variables for `VGG16Features` from {layer: {"kernel", "bias"}} arrays (host arrays
    stay host arrays: nothing is computed on a device here)."""
    params = {name: {"kernel": np.asarray(p["kernel"], np.float32), "bias": np.asarray(p["bias"], np.float32)}
              for name, p in params.items()}
    backward = {name: {"kernel": backward_kernel(p["kernel"])} for name, p in params.items()}
    return {"params": params, "backward": backward}


def features(variables: Mapping[str, Any], image: jax.Array, layers: Sequence[str],
             dtype: Any = jnp.float32, remat: bool = False, pooling: str = "max",
             hw: jax.Array | None = None, precision: str = "default",
             pool_impl: str = "reshape") -> dict[str, jax.Array]:
    """Activations of `layers` for one preprocessed image (H, W, 3) or a batch (N, H, W, 3).

    `hw` ((2,) or (N, 2) integers) is each image's real size when it is padded to a bucket:
    the activations outside it are zero, inside they equal the unpadded image's.
    """
    batched = image.ndim == 4
    x = image if batched else image[None]
    if hw is not None and not batched:
        hw = hw[None]
    out = VGG16Features(tuple(layers), dtype=dtype, remat=remat, pooling=pooling,
                        precision=precision, pool_impl=pool_impl).apply(variables, x, hw)
    return out if batched else {k: v[0] for k, v in out.items()}


def random_params(seed: int = 0, widths: Mapping[str, tuple[int, int]] | None = None) -> dict:
    """He-normal random VGG16 parameters (for tests and benchmarks without real weights)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, cin, cout in CONV_LAYERS:
        if widths is not None:
            cin, cout = widths[name]
        # float32 draws scaled in float64: the same numbers under NumPy 1's casting rules and 2's
        k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32).astype(np.float64) * np.sqrt(2.0 / (9 * cin))
        out[name] = {"kernel": k.astype(np.float32),
                     "bias": (0.01 * rng.standard_normal(cout)).astype(np.float32)}
    return out
