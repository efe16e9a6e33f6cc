"""Pure, jittable losses and the targets they compare against.

total = content_weight·content + style_weight·style + tv_weight·tv, where
  content = Σ_l c_l · mean((F_l(x) − P_l)²)           over the content layers,
  style   = Σ_l Σ_r s_lr · a_r · mean((G_lr(x) − A_lr)²)  over the style layers and regions,
  G       = FᵀF / (H·W·C)                              with F the (H·W, C) activations,
  G_r     = Fᵀ diag(m_r) F / (Σ m_r · C)               guided by region r's mask m_r at the layer.
Without masks there is one region, the whole image (a_1 = 1, G_1 = G). With a content mask
(Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer") each region r
has its own style target A_r (its style image's Gram matrices, guided by that style's own mask)
and weight a_r, its share of the image's area, so a region's pixels are pulled as hard as in an
unguided run whatever its size. A region's mask at a layer is the pixel mask averaged over the
layer's pooling windows.
  tv      = mean(Δ_h x²) + mean(Δ_w x²)                on the image in 0..255 units.
A video frame adds temporal_weight · temporal (Ruder et al. 2016, "Artistic style transfer for
videos"), with the earlier results warped to the frame folded into one target m and one
per-pixel weight W (`video.flow.combine`: Σ_j W_j (x − m_j)² has the gradient of W (x − m)²):
  temporal = Σ_p W_p |x_p − m_p|² / (H·W·3)            on the image in 0..255 units.
The per-layer coefficients c_l, s_l are the layer weights, divided by the target's mean square
when `normalize` is on (so every term is O(1) from noise whatever the layer or image size).

Other style statistics (`Objective.style_loss`) replace mean((G − A)²) by a distance between
the image's and the style's activation distributions at the layer (F the layer's (N, C)
activations, each pixel weighted by the region's mask; statistics are float32):
  meanstd:   Σ_c ((μ_c − μ_c')² + (σ_c − σ_c')²) / C           σ² = variance + `STD_EPS`;
  w2:        (|μ − μ'|² + tr(Σ + Σ' − 2 (Σ'^½ Σ Σ'^½)^½)) / C  Σ = covariance + εI on both sides,
             the Wasserstein-2 distance of two Gaussians, the square roots by Newton–Schulz;
  sliced:    mean over C random unit directions d of the squared 1-D optimal transport
             distance between the projections F·d and the style's, by sorting (Heitz et al.);
  histogram: the same along each channel (Risser et al.'s exact histogram match);
  gram+histogram: mean((G − A)²) + ρ · the histogram distance, beside each other as Risser et
             al. use them (ρ = `STYLE_LOSS_SCALE["histogram"]` · the Gram target's mean square /
             the style's mean square activation when normalized, so both halves are of one size;
             1 otherwise).
The 1-D distances compare the image's sorted values with the style's quantile function at the
same levels, so the two may have different pixel counts; a region's pixels are those whose
mask at the layer is at least one half. Normalized, each is divided by the style's mean square
activation mean_c E[F_c'²] and multiplied by `STYLE_LOSS_SCALE`, so that at the content image a
typical photo and painting give a term of the Gram term's size and one --style-weight serves all.

Everything here works on one image (H, W, 3) that may be padded to a shape bucket: `hw` is its
real size, the network masks the padding (`vgg.mask`), and every mean above is over the real
pixels only, so a padded image has exactly the unpadded image's losses. Batches are made by
the caller (`solver` maps these functions over images).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.config import Config
from jaxstyle.model import vgg
from jaxstyle.model.layers import CHANNELS, grid, pools_before


@dataclass(frozen=True)
class Objective:
    """The static (program-shaping) part of the loss: which layers and terms, which precision,
    which convolution algorithm and pooling. Weights are data (`LossWeights`), not part of it."""

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    tv: bool
    normalize: bool = True
    dtype: str = "float32"
    conv: str = "auto"
    remat: bool = False
    pooling: str = "max"
    precision: str = "default"  # of the convolutions (see `vgg.PRECISIONS`)
    gram_precision: str = "highest"  # of the Gram matrices: a few percent of the FLOPs
    regions: int = 0  # guided style transfer: regions of the content mask (0: unguided)
    pool_impl: str = "reshape"  # how pooling is written for the platform (`vgg.pool`; `for_platform`)
    masked: bool = True  # False: no image is padded, the network needs no padding masks
    style_loss: str = "gram"  # the style statistic (`config.STYLE_LOSSES`)
    temporal: bool = False  # a video frame's temporal term (its targets: `Targets.temporal`)

    @classmethod
    def from_config(cls, config: Config, regions: int = 0) -> "Objective":
        """Layers with a zero overall weight are dropped, so the network stops as early as it can.
        `regions`: the content mask's regions (0: no mask)."""
        return cls(
            content_layers=config.content_layers if config.content_weight > 0 else (),
            style_layers=config.style_layers if config.style_weight > 0 else (),
            tv=config.tv_weight > 0,
            normalize=config.normalize,
            dtype=config.dtype if config.dtype != "auto" else "float32",  # runs resolve it first (`resolve`)
            conv=config.conv,
            remat=config.remat,
            pooling=config.pooling,
            precision=config.precision if config.precision != "auto" else "default",
            regions=regions if config.style_weight > 0 else 0,
            style_loss=config.style_loss,
            temporal=config.temporal_weight > 0,
        )

    @property
    def region_count(self) -> int:
        """Style targets per style layer: the regions, or 1 (the whole image)."""
        return max(self.regions, 1)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    def for_platform(self, platform: str) -> "Objective":
        """This objective as `platform` ("cpu", "gpu", "tpu") runs it: pooling written the way its
        compiler handles best (`vgg.pool`: reduce_window for XLA:TPU's tile layouts), and the Gram
        matrices on accelerators at "high" precision (three bfloat16 passes on a TPU instead of
        six, TF32 on a GPU instead of float32 off the tensor cores; bench/README.md measures what
        it costs L-BFGS), where a CPU computes float32 anyway."""
        gram = self.gram_precision if platform == "cpu" or self.gram_precision != "highest" else "high"
        return dataclasses.replace(self, pool_impl="window" if platform == "tpu" else "reshape",
                                   gram_precision=gram)


class LossWeights(NamedTuple):
    """The weights of a run, as data: per content layer, per style layer, and of the three terms."""

    content_layers: jax.Array  # (n_content,)
    style_layers: jax.Array  # (n_style,)
    terms: jax.Array  # (content_weight, style_weight, tv_weight)
    temporal: jax.Array | None = None  # temporal_weight, when the objective has the term

    @classmethod
    def from_config(cls, config: Config, objective: Objective) -> "LossWeights":
        import numpy as np

        def pick(layers, all_layers, all_weights):
            w = dict(zip(all_layers, all_weights))
            return np.asarray([w[n] for n in layers], np.float32)

        return cls(pick(objective.content_layers, config.content_layers, config.content_layer_weights),
                   pick(objective.style_layers, config.style_layers, config.style_layer_weights),
                   np.asarray([config.content_weight, config.style_weight, config.tv_weight], np.float32),
                   np.float32(config.temporal_weight) if objective.temporal else None)


class Targets(NamedTuple):
    """What one image is compared with, and the per-layer coefficients (a jit argument)."""

    content: tuple[jax.Array, ...]  # activations (H_l, W_l, C_l) per content layer
    style: tuple[Any, ...]  # per style layer: Gram matrices (R, C_l, C_l), one per region, or the
    # `style_loss`'s statistics (a tuple of arrays with a leading R axis: `finish_statistics`)
    # (gram+histogram: the Gram matrices, the quantile functions and each region's ratio ρ (R,))
    content_coeffs: jax.Array  # (n_content,)
    style_coeffs: jax.Array  # (n_style, R)
    weights: jax.Array  # (content_weight, style_weight, tv_weight)
    hw: jax.Array  # int32 (2,): the image's real height and width inside its padded shape
    guides: tuple[jax.Array, ...] = ()  # region masks (H_l, W_l, R) per style layer (guided runs)
    region_weights: jax.Array | None = None  # (R,): each region's share of the image (sums to 1)
    # A video frame's temporal term (`Objective.temporal`): (target m (H, W, 3) in the network's
    # input space, per-pixel weight W (H, W), temporal_weight); () otherwise.
    temporal: tuple[jax.Array, ...] = ()


class Terms(NamedTuple):
    """The loss and its unweighted terms (scalars)."""

    total: jax.Array
    content: jax.Array
    style: jax.Array
    tv: jax.Array


def _count(hw: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """Real positions of an (H, W, ...) array whose real size is `hw`, as a float."""
    if hw is None:
        return jnp.float32(shape[0] * shape[1])
    return hw[0].astype(jnp.float32) * hw[1].astype(jnp.float32)


def gram(f: jax.Array, hw: jax.Array | None = None, precision: str = "highest") -> jax.Array:
    """Gram matrix FᵀF / (H·W·C) of activations (H, W, C), zero outside the real `hw`, accumulated
    in float32."""
    h, w, c = f.shape
    with jax.named_scope("gram"):
        g = _gram_product(f.reshape(h * w, c), precision)
        return g / (_count(hw, f.shape) * c)  # in float: H·W·C passes 2**31 for large images


def _outer(a: jax.Array, b: jax.Array, p: Any, t: Any) -> jax.Array:
    return jnp.einsum("pc,pd->cd", a, b, precision=p, preferred_element_type=jnp.float32)


def _times(a: jax.Array, b: jax.Array, p: Any, t: Any) -> jax.Array:
    return jnp.einsum("pc,cd->pd", a, b, precision=p, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gram_product(m: jax.Array, precision: str) -> jax.Array:
    """MᵀM (C, C) in float32 for M (P, C). Its gradient is one product, M(Ḡ + Ḡᵀ), where
    differentiating the product would make two (one for each factor)."""
    return vgg.product(_outer, m, m, precision)


def _gram_product_fwd(m: jax.Array, precision: str) -> tuple[jax.Array, jax.Array]:
    return _gram_product(m, precision), m


def _gram_product_bwd(precision: str, m: jax.Array, dg: jax.Array) -> tuple[jax.Array]:
    sym = (dg + dg.T).astype(m.dtype)
    return (vgg.product(_times, m, sym, precision).astype(m.dtype),)


_gram_product.defvjp(_gram_product_fwd, _gram_product_bwd)


def guided_gram(f: jax.Array, guide: jax.Array, precision: str = "highest") -> jax.Array:
    """Gram matrices (R, C, C) of activations (H, W, C) weighted by each region's mask in
    `guide` (H, W, R), zero outside the real region: Fᵀ diag(m_r) F / (Σ m_r · C), accumulated
    in float32 (an empty region's matrix is zero)."""
    h, w, c = f.shape
    m = f.reshape(h * w, c)
    g = guide.reshape(h * w, -1)
    out = [vgg.product(lambda a, b, p, t: jnp.einsum("pc,pd->cd", a, b, precision=p,
                                                     preferred_element_type=jnp.float32),
                       m * g[:, r, None].astype(m.dtype), m, precision) for r in range(g.shape[1])]
    mass = jnp.sum(g.astype(jnp.float32), axis=0)
    return jnp.stack(out) / (jnp.maximum(mass, 1e-6) * c)[:, None, None]


def layer_guide(guide: jax.Array, hw: jax.Array | None, name: str) -> jax.Array:
    """A pixel guide (H, W, R) at layer `name`'s grid: averaged over its pooling windows, zero
    outside the layer's real region."""
    k = 1 << pools_before(name)
    gh, gw = grid(guide.shape[:2], name)
    g = guide[: gh * k, : gw * k].reshape(gh, k, gw, k, -1).mean(axis=(1, 3))
    if hw is None:
        return g
    h, w = grid_hw(hw, name)
    inside = (jnp.arange(gh)[:, None] < h) & (jnp.arange(gw)[None, :] < w)
    return jnp.where(inside[..., None], g, 0.0)


# --- Style statistics other than the Gram matrix (`Objective.style_loss`) -----------------------

STD_EPS = 1e-3  # added to each channel's variance (meanstd): a dead channel's σ stays differentiable
W2_EPS = 1e-3  # w2: ε = W2_EPS · the style's mean channel variance, added to both covariances
# Iterations of the matrix square root: eigenvalues down to 1e-5 of the largest converge to 2e-4
# (measured, 64x64); at 1e-6 the smallest roots come out 15% low, the trace 6e-5 low.
NEWTON_SCHULZ = 18
QUANTILES = 4096  # most levels at which a style's quantile function is kept (sliced, histogram)
# Each loss's normalized term times this is of the Gram term's size at the content image: the
# geometric mean of the Gram term over each term at the start of a run (ImageNet weights, 128 px,
# two photos x two paintings of ../shared/images: `bench/style_losses.py --scale`, ratios from
# 1.1 to 5.4; README "Style losses").
STYLE_LOSS_SCALE = {"gram": 1.0, "w2": 1.4, "sliced": 3.9, "histogram": 1.75, "meanstd": 1.9,
                    "gram+histogram": 0.5}  # its two halves are each of the Gram term's size


def _hi(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


@functools.lru_cache(maxsize=None)
def directions(name: str, channels: int) -> np.ndarray:
    """C random unit directions (C, C) (columns) for the sliced loss at layer `name`: fixed by
    the layer's name, so every evaluation of a run (its line searches included) and the style's
    targets see the same ones."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d = rng.standard_normal((channels, channels))
    d = (d / np.linalg.norm(d, axis=0, keepdims=True)).astype(np.float32)
    d.flags.writeable = False  # shared by every call (cached)
    return d


def pixel_weights(shape: tuple[int, ...], hw: jax.Array | None, guide: jax.Array | None = None) -> jax.Array:
    """(H·W, R) weights of an activation map's pixels (H, W, C): each region's mask at the layer
    (`guide` (H, W, R), zero outside the real region), or 1 inside the real `hw` (R = 1)."""
    h, w = shape[0], shape[1]
    if guide is not None:
        return guide.reshape(h * w, -1).astype(jnp.float32)
    if hw is None:
        return jnp.ones((h * w, 1), jnp.float32)
    inside = (jnp.arange(h)[:, None] < hw[0]) & (jnp.arange(w)[None, :] < hw[1])
    return inside.reshape(h * w, 1).astype(jnp.float32)


def _moments(m: jax.Array, wts: jax.Array, full: bool) -> tuple[jax.Array, jax.Array]:
    """Weighted mean (R, C) and second moment (R, C, C) if `full`, else its diagonal (R, C), of
    the rows of m (N, C) under each column of `wts` (N, R)."""
    mass = jnp.maximum(jnp.sum(wts, axis=0), 1e-6)  # (R,)
    mean = _hi("nr,nc->rc", wts, m) / mass[:, None]
    if full:
        second = jnp.stack([_hi("nc,nd->cd", m * wts[:, r, None], m) for r in range(wts.shape[1])])
        return mean, second / mass[:, None, None]
    return mean, _hi("nr,nc->rc", wts, m * m) / mass[:, None]


def _projections(m: jax.Array, loss: str, name: str) -> jax.Array:
    if loss == "histogram":
        return m
    return _hi("nc,ck->nk", m, jnp.asarray(directions(name, m.shape[1])))


def _sorted(p: jax.Array, selected: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The selected rows' values of p (N, K) sorted along each column (the rest after them, as
    +inf), and how many were selected."""
    return jnp.sort(jnp.where(selected[:, None], p, jnp.inf), axis=0), jnp.sum(selected.astype(jnp.int32))


def _at_levels(values: jax.Array, count: jax.Array, levels: jax.Array) -> jax.Array:
    """The quantile function of the first `count` rows of `values` (sorted columns (N, K), the
    q-th of n at level (q + ½)/n) at `levels` (L,), linearly interpolated: (L, K)."""
    n = jnp.maximum(count, 1).astype(jnp.float32)
    pos = jnp.clip(levels * n - 0.5, 0.0, n - 1.0)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(count, 1) - 1)
    frac = (pos - lo.astype(jnp.float32))[:, None]
    real = jnp.arange(values.shape[0]) < count  # never read the +inf beyond the selected rows
    v = jnp.where(real[:, None], values, 0.0)
    return v[lo] * (1.0 - frac) + v[hi] * frac


def style_statistics(f: jax.Array, wts: jax.Array, loss: str, name: str, quantiles: int) -> tuple:
    """The statistics of activations f (H, W, C) that a style target blends linearly, one per
    region (column of `wts` (H·W, R)): meanstd (mean, mean square), w2 (mean, second moment),
    sliced and histogram (the quantile function at `quantiles` levels (Q, K))."""
    m = f.reshape(-1, f.shape[-1]).astype(jnp.float32)
    if loss in ("meanstd", "w2"):
        return _moments(m, wts, full=loss == "w2")
    p = _projections(m, loss, name)
    levels = (jnp.arange(quantiles, dtype=jnp.float32) + 0.5) / quantiles
    out = []
    for r in range(wts.shape[1]):
        values, count = _sorted(p, wts[:, r] >= 0.5)
        out.append(jnp.where(count > 0, _at_levels(values, count, levels), 0.0))
    return (jnp.stack(out),)


def sqrtm(a: jax.Array, iterations: int = NEWTON_SCHULZ) -> jax.Array:
    """The square root of symmetric positive definite matrices a (..., C, C) by the coupled
    Newton–Schulz iteration (matrix products only, so it runs well on accelerators, in float32
    at the highest precision), scaled by the Frobenius norm so that it converges."""
    eye = jnp.eye(a.shape[-1], dtype=jnp.float32)
    norm = jnp.sqrt(jnp.sum(a * a, axis=(-2, -1), keepdims=True))
    y = a / norm
    z = jnp.broadcast_to(eye, a.shape)

    def step(_, yz):
        y, z = yz
        t = 1.5 * eye - 0.5 * _hi("...ij,...jk->...ik", z, y)
        return _hi("...ij,...jk->...ik", y, t), _hi("...ij,...jk->...ik", t, z)

    y, _ = jax.lax.fori_loop(0, iterations, step, (y, z))
    return y * jnp.sqrt(norm)


def finish_statistics(stats: tuple, loss: str) -> tuple:
    """A style target from (blended) `style_statistics`: meanstd (mean, σ), w2 (mean, Σ + εI,
    its square root, ε), sliced and histogram (the quantile function) as they are."""
    if loss == "meanstd":
        mean, square = stats
        return mean, jnp.sqrt(jnp.maximum(square - mean * mean, 0.0) + STD_EPS)
    if loss == "w2":
        mean, second = stats
        c = mean.shape[-1]
        cov = second - mean[:, :, None] * mean[:, None, :]
        eps = W2_EPS * jnp.trace(cov, axis1=-2, axis2=-1) / c + 1e-6  # (R,)
        cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + eps[:, None, None] * jnp.eye(c)
        return mean, cov, sqrtm(cov), eps
    return tuple(stats)


def style_power(target: Any, loss: str) -> jax.Array:
    """The style's mean square activation mean_c E[F_c²] per region (R,): what a normalized
    statistic's term is divided by."""
    if loss == "gram":
        return jnp.mean(jnp.square(target), axis=(1, 2))
    if loss == "gram+histogram":
        return jnp.mean(jnp.square(target[0]), axis=(1, 2))
    if loss == "meanstd":
        mean, std = target
        return jnp.mean(mean * mean + std * std, axis=-1)
    if loss == "w2":
        mean, cov, _, _ = target
        return jnp.mean(mean * mean, axis=-1) + jnp.trace(cov, axis1=-2, axis2=-1) / mean.shape[-1]
    return jnp.mean(jnp.square(target[0]), axis=(1, 2))


def style_distance(f: jax.Array, wts: jax.Array, target: tuple, loss: str, name: str) -> jax.Array:
    """Each region's distance (R,) between the activations f (H, W, C), its pixels weighted by
    `wts` (H·W, R), and the style `target` (`finish_statistics`) under a non-Gram `loss`."""
    m = f.reshape(-1, f.shape[-1]).astype(jnp.float32)
    c = m.shape[1]
    if loss == "meanstd":
        mean, square = _moments(m, wts, full=False)
        std = jnp.sqrt(jnp.maximum(square - mean * mean, 0.0) + STD_EPS)
        return jnp.mean(jnp.square(mean - target[0]) + jnp.square(std - target[1]), axis=-1)
    if loss == "w2":
        mu_s, cov_s, root_s, eps = target
        mean, second = _moments(m, wts, full=True)
        cov = second - mean[:, :, None] * mean[:, None, :] + eps[:, None, None] * jnp.eye(c)
        cross = _hi("rij,rjk->rik", _hi("rij,rjk->rik", root_s, cov), root_s)
        cross = 0.5 * (cross + jnp.swapaxes(cross, -1, -2))
        trace = (jnp.trace(cov, axis1=-2, axis2=-1) + jnp.trace(cov_s, axis1=-2, axis2=-1)
                 - 2.0 * jnp.trace(sqrtm(cross), axis1=-2, axis2=-1))
        return (jnp.sum(jnp.square(mean - mu_s), axis=-1) + trace) / c
    p = _projections(m, loss, name)
    quantiles = target[0]  # (R, Q, K)
    out = []
    for r in range(wts.shape[1]):
        values, count = _sorted(p, wts[:, r] >= 0.5)
        n = jnp.maximum(count, 1)
        levels = (jnp.arange(p.shape[0], dtype=jnp.float32) + 0.5) / n.astype(jnp.float32)
        q = quantiles[r]
        goal = _at_levels(q, jnp.int32(q.shape[0]), levels)  # the style's values at the image's levels
        real = (jnp.arange(p.shape[0]) < count)[:, None]
        d = jnp.where(real, jnp.where(real, values, 0.0) - goal, 0.0)
        out.append(jnp.sum(d * d) / (n.astype(jnp.float32) * p.shape[1]))
    return jnp.stack(out)


def quantile_count(style_shape: tuple[int, int], name: str) -> int:
    """Levels at which a style's quantile function is kept at layer `name` (sliced, histogram):
    its (padded) pixel count there, at most `QUANTILES`."""
    h, w = grid(style_shape, name)
    return min(h * w, QUANTILES)


def statistics_shapes(loss: str, channels: int, regions: int, quantiles: int) -> tuple:
    """Shapes of a non-Gram style target (`finish_statistics`) at a layer of `channels`."""
    f32, r, c = jnp.float32, regions, channels
    if loss == "meanstd":
        return (jax.ShapeDtypeStruct((r, c), f32),) * 2
    if loss == "w2":
        return (jax.ShapeDtypeStruct((r, c), f32), jax.ShapeDtypeStruct((r, c, c), f32),
                jax.ShapeDtypeStruct((r, c, c), f32), jax.ShapeDtypeStruct((r,), f32))
    return (jax.ShapeDtypeStruct((r, quantiles, c), f32),)


def mse(a: jax.Array, b: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """Mean squared difference over the real positions, in float32 (both zero outside them)."""
    d = a.astype(jnp.float32) - b.astype(jnp.float32)
    if a.ndim < 3:
        return jnp.mean(d * d)
    return jnp.sum(d * d) / (_count(hw, a.shape) * a.shape[-1])


def mean_square(a: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """Mean of a² over the real positions (zero outside them)."""
    return mse(a, jnp.zeros((), a.dtype), hw) if a.ndim >= 3 else jnp.mean(jnp.square(a.astype(jnp.float32)))


def total_variation(x: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """mean(Δ_h²) + mean(Δ_w²) of an image (H, W, 3), over neighbour pairs inside `hw`."""
    dh = x[1:, :, :] - x[:-1, :, :]
    dw = x[:, 1:, :] - x[:, :-1, :]
    if hw is None:
        return jnp.mean(dh * dh) + jnp.mean(dw * dw)
    h, w = hw[0], hw[1]
    rows, cols = jnp.arange(x.shape[0])[:, None, None], jnp.arange(x.shape[1])[None, :, None]
    in_h = (rows[:-1] < h - 1) & (cols < w)
    in_w = (rows < h) & (cols[:, :-1] < w - 1)
    hf, wf = h.astype(jnp.float32), w.astype(jnp.float32)
    return (jnp.sum(jnp.where(in_h, dh * dh, 0.0)) / ((hf - 1) * wf * 3)
            + jnp.sum(jnp.where(in_w, dw * dw, 0.0)) / (hf * (wf - 1) * 3))


def temporal_loss(x: jax.Array, target: jax.Array, weights: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """Σ_p W_p |x_p − m_p|² / (H·W·3) of an image x (H, W, 3) and a target m of its shape, with
    per-pixel weights W (H, W) (zero outside the real `hw`), in float32."""
    d = x.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.sum(weights.astype(jnp.float32)[..., None] * d * d) / (_count(hw, x.shape) * x.shape[-1])


def network(variables: Any, x: jax.Array, objective: Objective, layers: tuple[str, ...],
            hw: jax.Array | None) -> dict[str, jax.Array]:
    """The activations of `layers` for one image under `objective`'s precision and options."""
    return vgg.features(variables, x, layers, dtype=_dtype(objective.dtype), remat=objective.remat,
                        pooling=objective.pooling, hw=hw, precision=objective.precision,
                        pool_impl=objective.pool_impl)


def terms(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> Terms:
    """All loss terms of image x (H, W, 3) in the network's input space."""
    hw = targets.hw
    feats = network(variables, x, objective, objective.layers, hw if objective.masked else None)
    zero = jnp.zeros((), jnp.float32)
    content = sum((targets.content_coeffs[i] * mse(feats[name], targets.content[i], grid_hw(hw, name))
                   for i, name in enumerate(objective.content_layers)), zero)
    style = sum((_style_layer(feats[name], targets, i, name, objective)
                 for i, name in enumerate(objective.style_layers)), zero)
    tv = total_variation(x.astype(jnp.float32), hw) if objective.tv else zero
    cw, sw, tw = targets.weights[0], targets.weights[1], targets.weights[2]
    total = cw * content + sw * style + tw * tv
    if objective.temporal:  # in the total only: the reported terms stay content, style and tv
        target, weights, weight = targets.temporal
        total = total + weight * temporal_loss(x, target, weights, hw)
    return Terms(total, content, style, tv)


def _style_layer(f: jax.Array, targets: Targets, i: int, name: str, objective: Objective) -> jax.Array:
    """Layer i's style term: Σ_r s_ir · a_r · mean((G_r − A_ir)²), or · the `style_loss`'s distance."""
    weights = targets.region_weights if targets.region_weights is not None else 1.0
    loss, target = objective.style_loss, targets.style[i]
    if loss != "gram":  # the distributions' distances weigh each pixel by its region's mask
        wts = pixel_weights(f.shape, grid_hw(targets.hw, name), targets.guides[i] if objective.regions else None)
    if loss not in ("gram", "gram+histogram"):
        per_region = style_distance(f, wts, target, loss, name)
        return jnp.sum(targets.style_coeffs[i] * weights * per_region)
    if objective.regions:
        g = guided_gram(f, targets.guides[i], objective.gram_precision)
    else:
        g = gram(f, grid_hw(targets.hw, name), objective.gram_precision)[None]
    d = g - (target[0] if loss == "gram+histogram" else target)
    per_region = jnp.mean(d * d, axis=(1, 2))
    if loss == "gram+histogram":
        per_region = per_region + target[2] * style_distance(f, wts, (target[1],), "histogram", name)
    return jnp.sum(targets.style_coeffs[i] * weights * per_region)


def total(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> jax.Array:
    """The scalar loss minimized by the solver."""
    return terms(x, variables, targets, objective).total


def grid_hw(hw: jax.Array | None, name: str) -> jax.Array | None:
    """A real size `hw` at layer `name`'s grid."""
    return None if hw is None else hw >> pools_before(name)


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def style_grams(variables: Any, styles: jax.Array, style_hw: jax.Array, blend: jax.Array,
                objective: Objective, masks: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """Style targets (R, C, C) per style layer from style images (S, H, W, 3), each padded to
    the same shape with its real size in `style_hw` (S, 2). Unguided: one target, the Gram
    matrices blended by `blend` (S,), which sums to 1. Guided (`objective.regions` = S): style
    k's Gram matrices weighted by its mask `masks[k]` (H, W) are region k's target."""
    if not objective.style_layers:
        return ()
    feats = network(variables, styles, objective, objective.style_layers, style_hw)
    out = []
    for name in objective.style_layers:
        if objective.style_loss == "gram":
            out.append(_gram_target(feats[name], style_hw, blend, masks, name, objective))
        elif objective.style_loss == "gram+histogram":
            g = _gram_target(feats[name], style_hw, blend, masks, name, objective)
            (q,) = _style_statistics(feats[name], style_hw, blend, masks, name, objective, "histogram")
            ratio = jnp.ones(g.shape[:1], jnp.float32)
            if objective.normalize:
                ratio = STYLE_LOSS_SCALE["histogram"] * style_power(g, "gram") / jnp.maximum(
                    style_power((q,), "histogram"), 1e-12)
            out.append((g, q, ratio))
        else:
            out.append(_style_statistics(feats[name], style_hw, blend, masks, name, objective))
    return tuple(out)


def _gram_target(feats: jax.Array, style_hw: jax.Array, blend: jax.Array, masks: jax.Array | None,
                 name: str, objective: Objective) -> jax.Array:
    """The Gram target (R, C, C) at layer `name` from the styles' activations (S, H, W, C):
    their Gram matrices blended by `blend`, or in a guided run style k's over its mask as region k's."""
    if objective.regions:
        return jax.vmap(lambda f, m, h: guided_gram(f, layer_guide(m[..., None], h, name),
                                                    objective.gram_precision)[0])(feats, masks, style_hw)
    grams = jax.vmap(lambda f, h: gram(f, h, objective.gram_precision))(feats, grid_hw(style_hw, name))
    return jnp.tensordot(blend.astype(jnp.float32), grams, axes=(0, 0))[None]


def _style_statistics(feats: jax.Array, style_hw: jax.Array, blend: jax.Array, masks: jax.Array | None,
                      name: str, objective: Objective, loss: str | None = None) -> tuple:
    """A non-Gram style target at layer `name` from the styles' activations (S, H, W, C): their
    statistics blended by `blend` (means, second moments and quantile functions mix linearly:
    a blend of quantile functions is the styles' 1-D Wasserstein barycentre), or in a guided
    run style k's, over its mask, as region k's target."""
    loss, q = loss or objective.style_loss, min(feats.shape[1] * feats.shape[2], QUANTILES)

    def one(f, h, m):
        guide = layer_guide(m[..., None], h, name) if objective.regions else None
        return style_statistics(f, pixel_weights(f.shape, grid_hw(h, name), guide), loss, name, q)

    stats = jax.vmap(one)(feats, style_hw, masks if objective.regions else jnp.zeros(feats.shape[:1]))
    if objective.regions:
        stats = jax.tree.map(lambda a: a[:, 0], stats)  # (S, ...): style k is region k
    else:
        stats = jax.tree.map(lambda a: jnp.tensordot(blend.astype(jnp.float32), a[:, 0], axes=(0, 0))[None],
                             stats)
    return finish_statistics(stats, loss)


def make_targets(variables: Any, content: jax.Array, hw: jax.Array, grams: tuple[jax.Array, ...],
                 weights: LossWeights, objective: Objective, guide: jax.Array | None = None,
                 temporal: tuple[jax.Array, jax.Array] = ()) -> Targets:
    """One image's targets: the content's activations (content (H, W, 3), real size `hw`), the
    style targets (`style_grams`), the per-layer coefficients (normalized when asked), in a
    guided run the regions' masks at each style layer from the pixel `guide` (H, W, R), and for
    a video frame (`objective.temporal`) its temporal target and per-pixel weights."""
    feats = network(variables, content, objective, objective.content_layers, hw if objective.masked else None) \
        if objective.content_layers else {}
    content_feats = tuple(feats[n].astype(_dtype(objective.dtype)) for n in objective.content_layers)
    r = objective.region_count

    def power(t, h):
        return mean_square(t, h)

    cw = weights.content_layers.astype(jnp.float32)
    sw = jnp.broadcast_to(weights.style_layers.astype(jnp.float32)[:, None], (len(grams), r))
    if objective.normalize and content_feats:
        cw = cw / jnp.maximum(jnp.stack([power(t, grid_hw(hw, n)) for t, n in
                                         zip(content_feats, objective.content_layers)]), 1e-12)
    if objective.normalize and grams:
        loss = objective.style_loss
        sw = sw * STYLE_LOSS_SCALE[loss] / jnp.maximum(jnp.stack([style_power(g, loss) for g in grams]), 1e-12)
    if not content_feats:
        cw = jnp.zeros((0,), jnp.float32)
    if not grams:
        sw = jnp.zeros((0, r), jnp.float32)
    guides: tuple = ()
    region_weights = jnp.ones((r,), jnp.float32)
    if objective.regions:
        g = guide.astype(jnp.float32)
        guides = tuple(layer_guide(g, hw, n) for n in objective.style_layers)
        area = jnp.sum(g, axis=(0, 1))
        region_weights = area / jnp.maximum(jnp.sum(area), 1e-12)
    time: tuple = ()
    if objective.temporal:
        target, w_map = temporal
        time = (target.astype(jnp.float32), w_map.astype(jnp.float32),
                jnp.asarray(weights.temporal, jnp.float32))
    return Targets(content_feats, tuple(grams), cw, sw, weights.terms.astype(jnp.float32),
                   hw.astype(jnp.int32), guides, region_weights, time)


def abstract_targets(objective: Objective, shape: tuple[int, int],
                     style_shape: tuple[int, int] | None = None) -> Targets:
    """Shapes (no data) of one image's targets at a padded (H, W) `shape`, its styles padded to
    `style_shape` (default: `shape`)."""
    f32 = jnp.float32
    r = objective.region_count
    style_shape = style_shape or shape

    def style(n):
        gram_shape = jax.ShapeDtypeStruct((r, CHANNELS[n], CHANNELS[n]), f32)
        if objective.style_loss == "gram":
            return gram_shape
        if objective.style_loss == "gram+histogram":
            return (gram_shape, *statistics_shapes("histogram", CHANNELS[n], r, quantile_count(style_shape, n)),
                    jax.ShapeDtypeStruct((r,), f32))
        return statistics_shapes(objective.style_loss, CHANNELS[n], r, quantile_count(style_shape, n))

    def feat(name):
        return jax.ShapeDtypeStruct((*grid(shape, name), CHANNELS[name]), _dtype(objective.dtype))

    return Targets(
        tuple(feat(n) for n in objective.content_layers),
        tuple(style(n) for n in objective.style_layers),
        jax.ShapeDtypeStruct((len(objective.content_layers),), f32),
        jax.ShapeDtypeStruct((len(objective.style_layers), r), f32),
        jax.ShapeDtypeStruct((3,), f32), jax.ShapeDtypeStruct((2,), jnp.int32),
        tuple(jax.ShapeDtypeStruct((*grid(shape, n), r), f32) for n in objective.style_layers)
        if objective.regions else (),
        jax.ShapeDtypeStruct((r,), f32),
        (jax.ShapeDtypeStruct((*shape, 3), f32), jax.ShapeDtypeStruct(shape, f32), jax.ShapeDtypeStruct((), f32))
        if objective.temporal else ())


def targets_for(variables: Any, config: Config, content: Any = None, styles: Any = (),
                style_blend: Any = None, shape: tuple[int, int] | None = None, guide: Any = None,
                style_masks: Any = None, temporal: Any = None) -> tuple[Objective, Targets]:
    """The objective and one unpadded image's targets, from a content image (h, w, 3) and style
    images in network space: a convenience for tests and notebooks (runs compute targets in
    their compiled `prepare` program). `shape` is the image's (h, w) when there is no content.
    Guided: `guide` (h, w, R) holds the content's region masks, style k paints region k, and
    `style_masks` (one (h_k, w_k) array or None per style) weight each style's pixels. With a
    `temporal_weight`, `temporal` is (target (h, w, 3) in network space, per-pixel weights (h, w))."""
    from jaxstyle.images.preprocess import pad_image

    regions = 0 if guide is None else int(np.shape(guide)[-1])
    objective = Objective.from_config(config, regions)
    weights = LossWeights.from_config(config, objective)
    hw = content.shape[:2] if content is not None else shape
    blend = np.asarray(style_blend if style_blend is not None else [1.0] * len(styles), np.float64)
    grams: tuple = ()
    if objective.style_layers:
        masks = list(style_masks) if style_masks is not None else [None] * len(styles)
        per = [jax.jit(style_grams, static_argnums=4)(
            variables, jnp.asarray(s)[None], jnp.asarray([s.shape[:2]], jnp.int32), jnp.ones((1,)),
            objective, jnp.asarray(m if m is not None else np.ones(s.shape[:2], np.float32))[None])
            for s, m in zip(styles, masks)]
        if objective.regions:
            grams = tuple(jax.tree.map(lambda *a: jnp.concatenate(a), *[g[i] for g in per])
                          for i in range(len(objective.style_layers)))
        elif objective.style_loss != "gram":  # blended before a target is made of them: one call
            shape = tuple(int(v) for v in np.max([np.shape(s)[:2] for s in styles], axis=0))
            padded = jnp.asarray(np.stack([pad_image(np.asarray(s, np.float32), shape) for s in styles]))
            grams = jax.jit(style_grams, static_argnums=4)(
                variables, padded, jnp.asarray([np.shape(s)[:2] for s in styles], jnp.int32),
                jnp.asarray(blend / blend.sum(), jnp.float32), objective)
        else:
            grams = tuple(sum(float(b) * g[i] for b, g in zip(blend / blend.sum(), per))
                          for i in range(len(objective.style_layers)))
    image = jnp.asarray(content if content is not None else np.zeros((*hw, 3), np.float32))
    make = jax.jit(make_targets, static_argnums=5)
    time = tuple(jnp.asarray(a, jnp.float32) for a in temporal) if objective.temporal else ()
    return objective, make(variables, image, jnp.asarray(hw, jnp.int32), grams, weights, objective,
                           None if guide is None else jnp.asarray(guide, jnp.float32), time)
