"""Pure, jittable losses and the targets they compare against.

total = content_weight·content + style_weight·style + tv_weight·tv, where
  content = Σ_l c_l · mean((F_l(x) − P_l)²)           over the content layers,
  style   = Σ_l s_l · mean((G_l(x) − A_l)²)           over the style layers,
  G       = FᵀF / (H·W·C)                              with F the (H·W, C) activations,
  tv      = mean(Δ_h x²) + mean(Δ_w x²)                on the image in 0..255 units.
The per-layer coefficients c_l, s_l are the layer weights, divided by the target's mean square
when `normalize` is on (so every term is O(1) from noise whatever the layer or image size).

Everything here works on one image (H, W, 3) that may be padded to a shape bucket: `hw` is its
real size, the network masks the padding (`vgg.mask`), and every mean above is over the real
pixels only, so a padded image has exactly the unpadded image's losses. Batches are made by
the caller (`solver` maps these functions over images).
"""
from __future__ import annotations

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

    @classmethod
    def from_config(cls, config: Config) -> "Objective":
        """Layers with a zero overall weight are dropped, so the network stops as early as it can."""
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
        )

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


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
    style: tuple[jax.Array, ...]  # Gram matrices (C_l, C_l) per style layer
    content_coeffs: jax.Array  # (n_content,)
    style_coeffs: jax.Array  # (n_style,)
    weights: jax.Array  # (content_weight, style_weight, tv_weight)
    hw: jax.Array  # int32 (2,): the image's real height and width inside its padded shape


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
    m = f.reshape(h * w, c)
    g = vgg.product(lambda a, b, p, t: jnp.einsum("pc,pd->cd", a, b, precision=p,
                                                  preferred_element_type=jnp.float32), m, m, precision)
    return g / (_count(hw, f.shape) * c)  # in float: H·W·C passes 2**31 for large images


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
                        pooling=objective.pooling, hw=hw, precision=objective.precision)


def terms(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> Terms:
    """All loss terms of image x (H, W, 3) in the network's input space."""
    hw = targets.hw
    feats = network(variables, x, objective, objective.layers, hw)
    zero = jnp.zeros((), jnp.float32)
    content = sum((targets.content_coeffs[i] * mse(feats[name], targets.content[i], grid_hw(hw, name))
                   for i, name in enumerate(objective.content_layers)), zero)
    style = sum((targets.style_coeffs[i] * mse(gram(feats[name], grid_hw(hw, name), objective.gram_precision),
                                               targets.style[i])
                 for i, name in enumerate(objective.style_layers)), zero)
    tv = total_variation(x.astype(jnp.float32), hw) if objective.tv else zero
    cw, sw, tw = targets.weights[0], targets.weights[1], targets.weights[2]
    return Terms(cw * content + sw * style + tw * tv, content, style, tv)


def total(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> jax.Array:
    """The scalar loss minimized by the solver."""
    return terms(x, variables, targets, objective).total


def grid_hw(hw: jax.Array | None, name: str) -> jax.Array | None:
    """A real size `hw` at layer `name`'s grid."""
    return None if hw is None else hw >> pools_before(name)


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def style_grams(variables: Any, styles: jax.Array, style_hw: jax.Array, blend: jax.Array,
                objective: Objective) -> tuple[jax.Array, ...]:
    """Blended Gram matrices per style layer of style images (S, H, W, 3), each padded to the
    same shape with its real size in `style_hw` (S, 2); `blend` (S,) sums to 1."""
    if not objective.style_layers:
        return ()
    feats = network(variables, styles, objective, objective.style_layers, style_hw)
    out = []
    for name in objective.style_layers:
        grams = jax.vmap(lambda f, h: gram(f, h, objective.gram_precision))(
            feats[name], grid_hw(style_hw, name))  # (S, C, C)
        out.append(jnp.tensordot(blend.astype(jnp.float32), grams, axes=(0, 0)))
    return tuple(out)


def make_targets(variables: Any, content: jax.Array, hw: jax.Array, grams: tuple[jax.Array, ...],
                 weights: LossWeights, objective: Objective) -> Targets:
    """One image's targets: the content's activations (content (H, W, 3), real size `hw`), the
    style's Gram matrices, and the per-layer coefficients (normalized when asked)."""
    feats = network(variables, content, objective, objective.content_layers, hw) \
        if objective.content_layers else {}
    content_feats = tuple(feats[n].astype(_dtype(objective.dtype)) for n in objective.content_layers)

    def coeffs(layer_weights, tensors, hws):
        if not tensors:
            return jnp.zeros((0,), jnp.float32)
        if not objective.normalize:
            return layer_weights.astype(jnp.float32)
        power = jnp.stack([mean_square(t, h) for t, h in zip(tensors, hws)])
        return layer_weights / jnp.maximum(power, 1e-12)

    c = coeffs(weights.content_layers, content_feats, [grid_hw(hw, n) for n in objective.content_layers])
    s = coeffs(weights.style_layers, grams, [None] * len(grams))
    return Targets(content_feats, tuple(grams), c, s, weights.terms.astype(jnp.float32),
                   hw.astype(jnp.int32))


def abstract_targets(objective: Objective, shape: tuple[int, int]) -> Targets:
    """Shapes (no data) of one image's targets at a padded (H, W) `shape`."""
    f32 = jnp.float32

    def feat(name):
        return jax.ShapeDtypeStruct((*grid(shape, name), CHANNELS[name]), _dtype(objective.dtype))

    return Targets(
        tuple(feat(n) for n in objective.content_layers),
        tuple(jax.ShapeDtypeStruct((CHANNELS[n],) * 2, f32) for n in objective.style_layers),
        jax.ShapeDtypeStruct((len(objective.content_layers),), f32),
        jax.ShapeDtypeStruct((len(objective.style_layers),), f32),
        jax.ShapeDtypeStruct((3,), f32), jax.ShapeDtypeStruct((2,), jnp.int32))


def targets_for(variables: Any, config: Config, content: Any = None, styles: Any = (),
                style_blend: Any = None, shape: tuple[int, int] | None = None) -> tuple[Objective, Targets]:
    """The objective and one unpadded image's targets, from a content image (h, w, 3) and style
    images in network space: a convenience for tests and notebooks (runs compute targets in
    their compiled `prepare` program). `shape` is the image's (h, w) when there is no content."""
    import numpy as np

    objective = Objective.from_config(config)
    weights = LossWeights.from_config(config, objective)
    hw = content.shape[:2] if content is not None else shape
    blend = np.asarray(style_blend if style_blend is not None else [1.0] * len(styles), np.float64)
    grams: tuple = ()
    if objective.style_layers:
        per = [jax.jit(style_grams, static_argnums=4)(variables, jnp.asarray(s)[None],
                                                       jnp.asarray([s.shape[:2]], jnp.int32),
                                                       jnp.ones((1,)), objective) for s in styles]
        grams = tuple(sum(float(b) * g[i] for b, g in zip(blend / blend.sum(), per))
                      for i in range(len(objective.style_layers)))
    image = jnp.asarray(content if content is not None else np.zeros((*hw, 3), np.float32))
    make = jax.jit(make_targets, static_argnums=5)
    return objective, make(variables, image, jnp.asarray(hw, jnp.int32), grams, weights, objective)
