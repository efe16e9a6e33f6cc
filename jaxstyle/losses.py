"""Pure, jittable losses and the targets they compare against.

total = content_weight·content + style_weight·style + tv_weight·tv, where
  content = Σ_l c_l · mean((F_l(x) − P_l)²)           over the content layers,
  style   = Σ_l s_l · mean((G_l(x) − A_l)²)           over the style layers,
  G       = FᵀF / (H·W·C)                              with F the (H·W, C) activations,
  tv      = mean(Δ_h x²) + mean(Δ_w x²)                on the image in 0..255 units.
The per-layer coefficients c_l, s_l are the layer weights, divided by the target's mean square
when `normalize` is on (so every term is O(1) from noise whatever the layer or image size).
Everything here works on one image (H, W, 3); batching is done with `jax.vmap` above.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import vgg
from .config import Config


@dataclass(frozen=True)
class Objective:
    """The static (shape-determining) part of the loss: which layers, which terms, which dtype."""

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    tv: bool
    dtype: str = "float32"
    conv: str = "auto"
    remat: bool = False

    @classmethod
    def from_config(cls, config: Config) -> "Objective":
        """Layers with a zero overall weight are dropped, so the network stops as early as it can."""
        return cls(
            content_layers=config.content_layers if config.content_weight > 0 else (),
            style_layers=config.style_layers if config.style_weight > 0 else (),
            tv=config.tv_weight > 0,
            dtype=config.dtype,
            conv=config.conv,
            remat=config.remat,
        )

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


class Targets(NamedTuple):
    """What the image is compared with, and the per-layer coefficients (a jit argument)."""

    content: tuple[jax.Array, ...]  # activations (H_l, W_l, C_l) per content layer
    style: tuple[jax.Array, ...]  # Gram matrices (C_l, C_l) per style layer
    content_coeffs: jax.Array  # (n_content,)
    style_coeffs: jax.Array  # (n_style,)
    weights: jax.Array  # (content_weight, style_weight, tv_weight)


class Terms(NamedTuple):
    """The loss and its unweighted terms (scalars)."""

    total: jax.Array
    content: jax.Array
    style: jax.Array
    tv: jax.Array


def gram(f: jax.Array) -> jax.Array:
    """Gram matrix FᵀF / (H·W·C) of activations (H, W, C), accumulated in float32."""
    h, w, c = f.shape
    m = f.reshape(h * w, c)
    g = jnp.einsum("pc,pd->cd", m, m, preferred_element_type=jnp.float32)
    return g / float(h * w * c)  # a float: H·W·C passes 2**31 for large images


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared difference, in float32."""
    d = a.astype(jnp.float32) - b.astype(jnp.float32)
    return jnp.mean(d * d)


def total_variation(x: jax.Array) -> jax.Array:
    """mean(Δ_h²) + mean(Δ_w²) of an image (H, W, 3)."""
    dh = x[1:, :, :] - x[:-1, :, :]
    dw = x[:, 1:, :] - x[:, :-1, :]
    return jnp.mean(dh * dh) + jnp.mean(dw * dw)


def terms(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> Terms:
    """All loss terms of image x (H, W, 3) in the network's input space."""
    feats = vgg.features(variables, x, objective.layers, dtype=_dtype(objective.dtype),
                         remat=objective.remat)
    zero = jnp.zeros((), jnp.float32)
    content = sum((targets.content_coeffs[i] * mse(feats[name], targets.content[i])
                   for i, name in enumerate(objective.content_layers)), zero)
    style = sum((targets.style_coeffs[i] * mse(gram(feats[name]), targets.style[i])
                 for i, name in enumerate(objective.style_layers)), zero)
    tv = total_variation(x.astype(jnp.float32)) if objective.tv else zero
    cw, sw, tw = targets.weights[0], targets.weights[1], targets.weights[2]
    return Terms(cw * content + sw * style + tw * tv, content, style, tv)


def network_variables(variables: Any, objective: Objective, shape: tuple[int, ...]) -> dict:
    """`variables` with the Winograd kernels `objective.conv` calls for at this image shape.

    Computed once per run, outside the optimizer loop (XLA would otherwise recompute the
    transforms at every evaluation).
    """
    plan = vgg.winograd_plan(objective.layers, shape, objective.conv, dtype=objective.dtype)
    return vgg.add_winograd(variables, plan)


def total(x: jax.Array, variables: Any, targets: Targets, objective: Objective) -> jax.Array:
    """The scalar loss minimized by the solver."""
    return terms(x, variables, targets, objective).total


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def make_targets(variables: Any, config: Config, objective: Objective,
                 content: jax.Array | None, styles: Sequence[jax.Array] = (),
                 style_blend: Sequence[float] | None = None) -> Targets:
    """Targets from preprocessed images: content activations and (blended) style Gram matrices.

    Several styles are combined by a weighted average of their Gram matrices (`style_blend`,
    normalized to sum to 1; equal when omitted). A batch of content images (N, H, W, 3) gives
    per-image content targets and coefficients (leading axis N), shared style targets.
    """
    style, style_coeffs = style_targets(variables, config, objective, styles, style_blend)
    content_feats, content_coeffs = content_targets(variables, config, objective, content)
    return Targets(
        content=content_feats, style=style, content_coeffs=content_coeffs, style_coeffs=style_coeffs,
        weights=jnp.asarray([config.content_weight, config.style_weight, config.tv_weight], jnp.float32),
    )


def content_targets(variables: Any, config: Config, objective: Objective,
                    content: jax.Array | None) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Content activations per content layer, and their coefficients (per image for a batch)."""
    if not objective.content_layers:
        batch = (len(content),) if content is not None and np.ndim(content) == 4 else ()
        return (), jnp.zeros((*batch, 0), jnp.float32)
    feats = _features(variables, jnp.asarray(content), objective.content_layers, _dtype(objective.dtype))
    tensors = tuple(feats[n] for n in objective.content_layers)
    return tensors, _coeffs(config, objective.content_layers, config.content_layers,
                            config.content_layer_weights, tensors, batched=np.ndim(content) == 4)


def style_targets(variables: Any, config: Config, objective: Objective, styles: Sequence[jax.Array],
                  style_blend: Sequence[float] | None = None) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Blended Gram matrices per style layer, and their coefficients."""
    if not objective.style_layers:
        return (), jnp.zeros((0,), jnp.float32)
    blend = np.asarray(style_blend if style_blend is not None else [1.0] * len(styles), np.float64)
    blend = blend / blend.sum()
    dtype = _dtype(objective.dtype)
    per_style = [_grams(variables, jnp.asarray(s), objective.style_layers, dtype) for s in styles]
    grams = tuple(sum(float(b) * g[i] for b, g in zip(blend, per_style))
                  for i in range(len(objective.style_layers)))
    return grams, _coeffs(config, objective.style_layers, config.style_layers,
                          config.style_layer_weights, grams)


def _coeffs(config: Config, layers, all_layers, all_weights, tensors, batched: bool = False) -> jax.Array:
    """Each layer's weight, divided by its target's mean square when normalizing."""
    w = dict(zip(all_layers, all_weights))
    out = []
    for name, t in zip(layers, tensors):
        axes = tuple(range(1, t.ndim)) if batched else None
        power = np.asarray(jnp.mean(jnp.square(t.astype(jnp.float32)), axis=axes))
        scale = 1.0 / np.maximum(power, 1e-12) if config.normalize else np.ones_like(power)
        out.append(w[name] * scale)
    return jnp.asarray(np.stack(out, axis=-1), jnp.float32)


@partial(jax.jit, static_argnums=(2, 3))
def _features(variables, image, layers, dtype):
    return vgg.features(variables, image, layers, dtype=dtype)


@partial(jax.jit, static_argnums=(2, 3))
def _grams(variables, image, layers, dtype):
    feats = vgg.features(variables, image, layers, dtype=dtype)
    return tuple(gram(feats[n]) for n in layers)
