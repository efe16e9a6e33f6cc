"""Independent float64 NumPy reference for jaxstyle's VGG16 losses and gradients.

Everything here works on a single image of shape (H, W, 3) (no batch axis) and
uses manual backpropagation, so tests can compare jaxstyle's JAX values and
gradients against a second, unrelated implementation.  Only NumPy is used
(h5py is imported lazily, only by ``load_h5_params``).
"""

from __future__ import annotations

import numpy as np

POOL = "pool"

#: VGG16 "notop" conv stack, Keras layer names; "pool" = 2x2/2 VALID max pool.
LAYERS: list = [
    "block1_conv1", "block1_conv2", POOL,
    "block2_conv1", "block2_conv2", POOL,
    "block3_conv1", "block3_conv2", "block3_conv3", POOL,
    "block4_conv1", "block4_conv2", "block4_conv3", POOL,
    "block5_conv1", "block5_conv2", "block5_conv3",
]
CONV_LAYERS: list = [name for name in LAYERS if name != POOL]


# --------------------------------------------------------------------------- #
# Primitive ops (forward and backward)
# --------------------------------------------------------------------------- #
def conv3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 stride-1 SAME (zero pad 1) cross-correlation; kernel HWIO, no ReLU."""
    h, w, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.broadcast_to(bias, (h, w, kernel.shape[3])).copy()
    for dh in range(3):
        for dw in range(3):
            out += xp[dh:dh + h, dw:dw + w, :] @ kernel[dh, dw]
    return out


def conv3x3_input_grad(g: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. the conv input, given g = dL/d(conv output) (H, W, O)."""
    h, w, _ = g.shape
    gxp = np.zeros((h + 2, w + 2, kernel.shape[2]))
    for dh in range(3):
        for dw in range(3):
            gxp[dh:dh + h, dw:dw + w, :] += g @ kernel[dh, dw].T
    return gxp[1:-1, 1:-1, :]


def _pool_windows(x: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H//2, W//2, C, 4); window entries in row-major order."""
    h2, w2, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
    win = x[:2 * h2, :2 * w2, :].reshape(h2, 2, w2, 2, c)
    return win.transpose(0, 2, 4, 1, 3).reshape(h2, w2, c, 4)


def maxpool2x2(x: np.ndarray) -> np.ndarray:
    """2x2 stride-2 VALID max pool (odd trailing row/column dropped)."""
    return _pool_windows(x).max(axis=-1)


def maxpool2x2_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Route g (H//2, W//2, C) to the first arg-max of each window of x."""
    win = _pool_windows(x)
    h2, w2, c, _ = win.shape
    onehot = np.zeros(win.shape)
    np.put_along_axis(onehot, win.argmax(axis=-1)[..., None], 1.0, axis=-1)
    gwin = (onehot * g[..., None]).reshape(h2, w2, c, 2, 2).transpose(0, 3, 1, 4, 2)
    gx = np.zeros(x.shape)
    gx[:2 * h2, :2 * w2, :] = gwin.reshape(2 * h2, 2 * w2, c)
    return gx


def avgpool2x2(x: np.ndarray) -> np.ndarray:
    """2x2 stride-2 VALID average pool (odd trailing row/column dropped)."""
    return _pool_windows(x).mean(axis=-1)


def avgpool2x2_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Spread g (H//2, W//2, C) evenly over each window of x."""
    h2, w2, c = g.shape
    gx = np.zeros(x.shape)
    gx[:2 * h2, :2 * w2, :] = np.repeat(np.repeat(g / 4.0, 2, axis=0), 2, axis=1)
    return gx


def gram(f: np.ndarray) -> np.ndarray:
    """Gram matrix F^T F / (H*W*C) of a feature map f (H, W, C), F = (H*W, C)."""
    h, w, c = f.shape
    mat = f.reshape(h * w, c)
    return mat.T @ mat / (h * w * c)


def gram_grad(f: np.ndarray, g_gram: np.ndarray) -> np.ndarray:
    """dL/df given f (H, W, C) and dL/dG (C, C) for G = gram(f)."""
    h, w, c = f.shape
    mat = f.reshape(h * w, c)
    return (mat @ (g_gram + g_gram.T) / (h * w * c)).reshape(h, w, c)


def guided_gram(f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Gram matrix F^T diag(m) F / (sum(m)*C) of f (H, W, C) weighted by a mask m (H, W)."""
    h, w, c = f.shape
    mat = f.reshape(h * w, c)
    wts = m.reshape(h * w, 1)
    return (mat * wts).T @ mat / (max(m.sum(), 1e-6) * c)


def guided_gram_grad(f: np.ndarray, m: np.ndarray, g_gram: np.ndarray) -> np.ndarray:
    """dL/df given f (H, W, C), the mask m (H, W) and dL/dG (C, C) for G = guided_gram(f, m)."""
    h, w, c = f.shape
    mat = f.reshape(h * w, c)
    wts = m.reshape(h * w, 1)
    return ((mat * wts) @ (g_gram + g_gram.T) / (max(m.sum(), 1e-6) * c)).reshape(h, w, c)


# --------------------------------------------------------------------------- #
# Style statistics other than the Gram matrix: value and dL/df of one region,
# f (N, C) its activations, w (N,) its pixel weights (mask values).
# --------------------------------------------------------------------------- #
def _spd_power(a: np.ndarray, p: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.maximum(vals, 0.0) ** p) @ vecs.T


def _weighted_moments(f, w):
    mass = w.sum()
    mean = w @ f / mass
    second = (f * w[:, None]).T @ f / mass
    return mean, second, mass


def meanstd_loss_and_grad(f, w, mu_s, std_s, eps):
    """Σ_c ((μ_c − μs_c)² + (σ_c − σs_c)²) / C with σ = sqrt(var + eps), and dL/df."""
    f, w = np.asarray(f, np.float64), np.asarray(w, np.float64)
    c = f.shape[1]
    mean, _, mass = _weighted_moments(f, w)
    var = w @ (f - mean) ** 2 / mass
    std = np.sqrt(var + eps)
    value = float(np.sum((mean - mu_s) ** 2 + (std - std_s) ** 2) / c)
    g_mean = 2 * (mean - mu_s) / c
    g_var = 2 * (std - std_s) / c / (2 * std)
    grad = w[:, None] * (g_mean[None] + g_var[None] * 2 * (f - mean)) / mass
    return value, grad


def w2_loss_and_grad(f, w, mu_s, cov_s, eps):
    """(|μ − μs|² + tr(Σ + Σs − 2 (Σs^½ Σ Σs^½)^½)) / C with Σ the weighted covariance + eps·I
    (matrix functions by eigendecomposition), and dL/df."""
    f, w = np.asarray(f, np.float64), np.asarray(w, np.float64)
    c = f.shape[1]
    mean, second, mass = _weighted_moments(f, w)
    cov = second - np.outer(mean, mean) + eps * np.eye(c)
    root_s = _spd_power(cov_s, 0.5)
    cross = root_s @ cov @ root_s
    value = float((np.sum((mean - mu_s) ** 2) + np.trace(cov) + np.trace(cov_s)
                   - 2 * np.trace(_spd_power(cross, 0.5))) / c)
    g_cov = (np.eye(c) - root_s @ _spd_power(cross, -0.5) @ root_s) / c  # dL/dΣ, symmetric
    g_mean = 2 * (mean - mu_s) / c - 2 * g_cov @ mean
    grad = w[:, None] * (2 * f @ g_cov + g_mean[None]) / mass
    return value, grad


def quantile_function(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each column's quantile function (the q-th of n sorted values at level (q + ½)/n,
    linear between, constant beyond) at `levels`."""
    n = values.shape[0]
    grid_ = (np.arange(n) + 0.5) / n
    s = np.sort(values, axis=0)
    return np.stack([np.interp(levels, grid_, s[:, k]) for k in range(values.shape[1])], axis=1)


def sorted_transport_loss_and_grad(f, selected, directions, target_quantiles):
    """Mean over the columns d of `directions` (C, K) of the squared 1-D optimal transport
    distance between the selected rows' projections f·d and the distribution whose quantile
    function is sampled by `target_quantiles` (Q, K) at levels (q + ½)/Q; and dL/df."""
    f = np.asarray(f, np.float64)
    d = np.asarray(directions, np.float64)
    rows = np.flatnonzero(selected)
    p = f[rows] @ d
    n, k = p.shape
    order = np.argsort(p, axis=0)
    q = target_quantiles.shape[0]
    goal = np.stack([np.interp((np.arange(n) + 0.5) / n, (np.arange(q) + 0.5) / q,
                               np.asarray(target_quantiles, np.float64)[:, j]) for j in range(k)], axis=1)
    diff = np.take_along_axis(p, order, axis=0) - goal
    value = float(np.sum(diff ** 2) / (n * k))
    g_p = np.zeros_like(p)
    np.put_along_axis(g_p, order, 2 * diff / (n * k), axis=0)
    grad = np.zeros_like(f)
    grad[rows] = g_p @ d.T
    return value, grad


def tv_loss(x: np.ndarray) -> float:
    """mean of squared vertical diffs + mean of squared horizontal diffs."""
    return float(np.mean((x[1:] - x[:-1]) ** 2) + np.mean((x[:, 1:] - x[:, :-1]) ** 2))


def tv_grad(x: np.ndarray) -> np.ndarray:
    """Gradient of ``tv_loss`` with respect to x."""
    g = np.zeros(x.shape)
    dv = 2.0 * (x[1:] - x[:-1]) / (x[1:].size)
    dh = 2.0 * (x[:, 1:] - x[:, :-1]) / (x[:, 1:].size)
    g[1:] += dv
    g[:-1] -= dv
    g[:, 1:] += dh
    g[:, :-1] -= dh
    return g


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #
def temporal_loss(x: np.ndarray, target: np.ndarray, weights: np.ndarray) -> float:
    """sum_p W_p |x_p - m_p|^2 / (H W 3): a video frame's temporal term."""
    return float(np.sum(weights[..., None] * (x - target) ** 2) / x.size)


def temporal_grad(x: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return 2.0 * weights[..., None] * (x - target) / x.size


def _run(params: dict, x: np.ndarray, upto: str | None, pooling: str = "max"):
    """Forward pass; returns (activations, tape) where tape records each op's input."""
    if upto is not None and upto not in CONV_LAYERS:
        raise ValueError(f"unknown conv layer {upto!r}")
    h = np.asarray(x, dtype=np.float64)
    acts, tape = {}, []
    for name in LAYERS:
        tape.append((name, h))
        if name == POOL:
            h = maxpool2x2(h) if pooling == "max" else avgpool2x2(h)
            continue
        kernel, bias = (np.asarray(a, dtype=np.float64) for a in params[name])
        h = np.maximum(conv3x3(h, kernel, bias), 0.0)
        acts[name] = h
        if name == upto:
            break
    return acts, tape


def forward(params: dict, x: np.ndarray, upto: str | None = None,
            pooling: str = "max") -> dict[str, np.ndarray]:
    """Post-ReLU activations of every conv layer up to and including ``upto``."""
    return _run(params, x, upto, pooling)[0]


def _deepest(layers) -> str | None:
    used = [CONV_LAYERS.index(name) for name in layers]
    return CONV_LAYERS[max(used)] if used else None


def _terms_and_act_grads(x, params, spec):
    """Loss terms (unweighted) plus dTotal/dA_l for each used layer."""
    layers = list(spec["content_layers"]) + list(spec["style_layers"])
    upto = _deepest(layers)
    acts, tape = _run(params, x, upto, spec.get("pooling", "max")) if upto else ({}, [])
    cw, sw = float(spec["content_weight"]), float(spec["style_weight"])
    act_grads = {name: np.zeros(acts[name].shape) for name in layers}

    content = 0.0
    for name, coeff, target in zip(spec["content_layers"], spec["content_coeffs"],
                                   spec["content_targets"]):
        diff = acts[name] - np.asarray(target, dtype=np.float64)
        content += coeff * np.mean(diff ** 2)
        act_grads[name] += cw * coeff * 2.0 * diff / diff.size

    style = 0.0
    guides = spec.get("style_guides")  # per style layer (H_l, W_l, R): a guided run
    for i, (name, coeff, target) in enumerate(zip(spec["style_layers"], spec["style_coeffs"],
                                                  spec["style_targets"])):
        if guides is None:
            diff = gram(acts[name]) - np.asarray(target, dtype=np.float64)
            style += coeff * np.mean(diff ** 2)
            act_grads[name] += gram_grad(acts[name], sw * coeff * 2.0 * diff / diff.size)
            continue
        for r, a_r in enumerate(spec["region_weights"]):
            m = np.asarray(guides[i][..., r], dtype=np.float64)
            diff = guided_gram(acts[name], m) - np.asarray(target[r], dtype=np.float64)
            k = coeff[r] * a_r
            style += k * np.mean(diff ** 2)
            act_grads[name] += guided_gram_grad(acts[name], m, sw * k * 2.0 * diff / diff.size)

    tv = tv_loss(np.asarray(x, dtype=np.float64))
    total = cw * content + sw * style + float(spec["tv_weight"]) * tv
    terms = {"content": float(content), "style": float(style), "tv": float(tv),
             "total": float(total)}
    return terms, act_grads, acts, tape


def loss_terms(x: np.ndarray, params: dict, spec: dict) -> dict:
    """{"content", "style", "tv", "total"} as Python floats (see module spec)."""
    return _terms_and_act_grads(x, params, spec)[0]


def loss_and_grad(x: np.ndarray, params: dict, spec: dict):
    """(total, terms, dTotal/dx) with the gradient from manual backpropagation."""
    x = np.asarray(x, dtype=np.float64)
    terms, act_grads, acts, tape = _terms_and_act_grads(x, params, spec)
    g = None  # gradient w.r.t. the output of the current op
    for name, op_input in reversed(tape):
        if name in act_grads:
            g = act_grads[name] if g is None else g + act_grads[name]
        if name == POOL:
            pool_grad = maxpool2x2_grad if spec.get("pooling", "max") == "max" else avgpool2x2_grad
            g = pool_grad(g, op_input)
        else:
            g = g * (acts[name] > 0.0)  # ReLU: zero gradient at exactly 0
            g = conv3x3_input_grad(g, np.asarray(params[name][0], dtype=np.float64))
    grad = np.zeros(x.shape) if g is None else g
    grad = grad + float(spec["tv_weight"]) * tv_grad(x)
    return terms["total"], terms, grad


# --------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------- #
def load_h5_params(path: str) -> dict:
    """Read a Keras-layout VGG16 notop h5 into {layer: (kernel HWIO, bias)} float64."""
    import h5py  # lazy: only needed for the converter test

    params = {}
    with h5py.File(path, "r") as f:
        for name in CONV_LAYERS:
            group = f[name]
            kernel = np.asarray(group[f"{name}_W_1:0"], dtype=np.float64)
            bias = np.asarray(group[f"{name}_b_1:0"], dtype=np.float64)
            params[name] = (kernel, bias)
    return params
