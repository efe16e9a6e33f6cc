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
The per-layer coefficients c_l, s_l are the layer weights, divided by the target's mean square
when `normalize` is on (so every term is O(1) from noise whatever the layer or image size).

Everything here works on one image (H, W, 3) that may be padded to a shape bucket: `hw` is its
real size, the network masks the padding (`vgg.mask`), and every mean above is over the real
pixels only, so a padded image has exactly the unpadded image's losses. Batches are made by
the caller (`solver` maps these functions over images).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import vgg
from .config import Config
from .layers import CHANNELS, grid, pools_before


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

    @classmethod
    def from_config(cls, config: Config, regions: int = 0) -> "Objective":
        """Layers with a zero overall weight are dropped, so the network stops as early as it can.
        `regions`: the content mask's regions (0: no mask)."""
        return cls(
            content_layers=config.content_layers if config.content_weight > 0 else (),
            style_layers=config.style_layers if config.style_weight > 0 else (),
            tv=config.tv_weight > 0,
            normalize=config.normalize,
            dtype=config.dtype,
            conv=config.conv,
            remat=config.remat,
            pooling=config.pooling,
            precision=config.precision if config.precision != "auto" else "default",
            regions=regions if config.style_weight > 0 else 0,
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

    @classmethod
    def from_config(cls, config: Config, objective: Objective) -> "LossWeights":
        import numpy as np

        def pick(layers, all_layers, all_weights):
            w = dict(zip(all_layers, all_weights))
            return np.asarray([w[n] for n in layers], np.float32)

        return cls(pick(objective.content_layers, config.content_layers, config.content_layer_weights),
                   pick(objective.style_layers, config.style_layers, config.style_layer_weights),
                   np.asarray([config.content_weight, config.style_weight, config.tv_weight], np.float32))


class Targets(NamedTuple):
    """What one image is compared with, and the per-layer coefficients (a jit argument)."""

    content: tuple[jax.Array, ...]  # activations (H_l, W_l, C_l) per content layer
    style: tuple[jax.Array, ...]  # Gram matrices (R, C_l, C_l) per style layer, one per region
    content_coeffs: jax.Array  # (n_content,)
    style_coeffs: jax.Array  # (n_style, R)
    weights: jax.Array  # (content_weight, style_weight, tv_weight)
    hw: jax.Array  # int32 (2,): the image's real height and width inside its padded shape
    guides: tuple[jax.Array, ...] = ()  # region masks (H_l, W_l, R) per style layer (guided runs)
    region_weights: jax.Array | None = None  # (R,): each region's share of the image (sums to 1)


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
    return Terms(cw * content + sw * style + tw * tv, content, style, tv)


def _style_layer(f: jax.Array, targets: Targets, i: int, name: str, objective: Objective) -> jax.Array:
    """Layer i's style term: Σ_r s_ir · a_r · mean((G_r − A_ir)²)."""
    if objective.regions:
        g = guided_gram(f, targets.guides[i], objective.gram_precision)
    else:
        g = gram(f, grid_hw(targets.hw, name), objective.gram_precision)[None]
    d = g - targets.style[i]
    per_region = jnp.mean(d * d, axis=(1, 2))
    weights = targets.region_weights if targets.region_weights is not None else 1.0
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
        if objective.regions:
            out.append(jax.vmap(lambda f, m, h: guided_gram(f, layer_guide(m[..., None], h, name),
                                                            objective.gram_precision)[0])(
                feats[name], masks, style_hw))  # (S, C, C)
        else:
            grams = jax.vmap(lambda f, h: gram(f, h, objective.gram_precision))(
                feats[name], grid_hw(style_hw, name))  # (S, C, C)
            out.append(jnp.tensordot(blend.astype(jnp.float32), grams, axes=(0, 0))[None])
    return tuple(out)


def make_targets(variables: Any, content: jax.Array, hw: jax.Array, grams: tuple[jax.Array, ...],
                 weights: LossWeights, objective: Objective, guide: jax.Array | None = None) -> Targets:
    """One image's targets: the content's activations (content (H, W, 3), real size `hw`), the
    style targets (`style_grams`), the per-layer coefficients (normalized when asked), and in a
    guided run the regions' masks at each style layer from the pixel `guide` (H, W, R)."""
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
        sw = sw / jnp.maximum(jnp.stack([jnp.mean(jnp.square(g), axis=(1, 2)) for g in grams]), 1e-12)
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
    return Targets(content_feats, tuple(grams), cw, sw, weights.terms.astype(jnp.float32),
                   hw.astype(jnp.int32), guides, region_weights)


def abstract_targets(objective: Objective, shape: tuple[int, int]) -> Targets:
    """Shapes (no data) of one image's targets at a padded (H, W) `shape`."""
    f32 = jnp.float32
    r = objective.region_count

    def feat(name):
        return jax.ShapeDtypeStruct((*grid(shape, name), CHANNELS[name]), _dtype(objective.dtype))

    return Targets(
        tuple(feat(n) for n in objective.content_layers),
        tuple(jax.ShapeDtypeStruct((r, CHANNELS[n], CHANNELS[n]), f32) for n in objective.style_layers),
        jax.ShapeDtypeStruct((len(objective.content_layers),), f32),
        jax.ShapeDtypeStruct((len(objective.style_layers), r), f32),
        jax.ShapeDtypeStruct((3,), f32), jax.ShapeDtypeStruct((2,), jnp.int32),
        tuple(jax.ShapeDtypeStruct((*grid(shape, n), r), f32) for n in objective.style_layers)
        if objective.regions else (),
        jax.ShapeDtypeStruct((r,), f32))


def targets_for(variables: Any, config: Config, content: Any = None, styles: Any = (),
                style_blend: Any = None, shape: tuple[int, int] | None = None, guide: Any = None,
                style_masks: Any = None) -> tuple[Objective, Targets]:
    """The objective and one unpadded image's targets, from a content image (h, w, 3) and style
    images in network space: a convenience for tests and notebooks (runs compute targets in
    their compiled `prepare` program). `shape` is the image's (h, w) when there is no content.
    Guided: `guide` (h, w, R) holds the content's region masks, style k paints region k, and
    `style_masks` (one (h_k, w_k) array or None per style) weight each style's pixels."""
    import numpy as np

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
            grams = tuple(jnp.concatenate([g[i] for g in per]) for i in range(len(objective.style_layers)))
        else:
            grams = tuple(sum(float(b) * g[i] for b, g in zip(blend / blend.sum(), per))
                          for i in range(len(objective.style_layers)))
    image = jnp.asarray(content if content is not None else np.zeros((*hw, 3), np.float32))
    make = jax.jit(make_targets, static_argnums=5)
    return objective, make(variables, image, jnp.asarray(hw, jnp.int32), grams, weights, objective,
                           None if guide is None else jnp.asarray(guide, jnp.float32))
