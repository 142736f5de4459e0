"""Complexity measures of functions (bitstrings on E) and of trained networks.

Functions are non-empty bitstrings of '0'/'1' (docs/DESIGN.md). The Boolean measures take the full truth
table of an n-input Boolean function (n in 1..16), character ``i`` being the output at the input whose
bits, most significant first, are the binary expansion of ``i`` (the order of
``sampler.data.boolean_inputs``).

Torch (with sampler's input checks) is imported only when a function needs it, so that ``import
analysis`` stays light.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _check_bits(name: str, value) -> str:
    # Local twin of sampler.functions.check_bitstring: that module imports torch at import time.
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a bitstring (str of '0'/'1'), got {type(value).__name__}")
    if not value or set(value) - {"0", "1"}:
        bad = sorted(set(value) - {"0", "1"})
        raise ValueError(f"{name} must be a non-empty string of '0' and '1', got {value[:40]!r}"
                         + (f" (characters {bad})" if bad else ""))
    return value


# sampler's check, imported lazily here and in stats: importing sampler imports torch (slow), and
# `import analysis` promises neither torch nor matplotlib.
def _check_int(name, value, **kw) -> int:
    from sampler.checks import check_int

    return check_int(name, value, **kw)


def lz76_phrases(bits: str) -> int:
    """Number of phrases of the Lempel-Ziv (1976) exhaustive-history parsing of ``bits``.

    The string is cut left to right into phrases. A phrase starting at position ``p`` is the
    shortest ``s[p:q]`` that is *not* a substring of ``s[:q-1]`` (it is copyable from earlier text,
    overlaps allowed, except for its last symbol); a final phrase that reaches the end of the string
    while still copyable also counts. This is the count computed by the Kaspar & Schuster (1987)
    algorithm, e.g. ``0001101001000101 -> 0.001.10.100.1000.101``, 6 phrases. Returns an int >= 1.
    """
    s = _check_bits("bits", bits)
    n, p, phrases = len(s), 0, 0
    while p < n:
        q = p + 1
        # Written from the definition rather than the pointer algorithm, for readability; Python's
        # substring search keeps it fast enough for k <= a few thousand.
        while q <= n and s[p:q] in s[:q - 1]:
            q += 1
        phrases += 1
        p = q
    return phrases


def lz_complexity(bits: str) -> float:
    """Lempel-Ziv complexity of a bitstring as defined by Dingle et al. (2018) and used by
    Valle-Perez et al. (2019) and Mingard et al. (2021).

    For a string ``s`` of length ``n``::

        C_LZ(s) = log2(n)                                  if s is all '0' or all '1'
        C_LZ(s) = log2(n) * (N(s) + N(reverse(s))) / 2     otherwise

    where ``N`` is :func:`lz76_phrases`, the number of phrases of the Lempel-Ziv (1976) parsing
    (Kaspar-Schuster counting). Symmetrising over the reversal and the special case for constant
    strings are Dingle et al.'s. In bits; ``0.0`` for a string of length 1 (``log2(1) = 0``).
    """
    s = _check_bits("bits", bits)
    n = len(s)
    if s.count(s[0]) == n:
        return math.log2(n)
    return math.log2(n) * (lz76_phrases(s) + lz76_phrases(s[::-1])) / 2.0


def entropy(bits: str) -> float:
    """Binary entropy, in bits, of the fraction of ones: ``H(p) = -p log2 p - (1-p) log2(1-p)``,
    ``p = (number of '1') / len(bits)``; 0 for a constant string, 1 for a balanced one."""
    s = _check_bits("bits", bits)
    p = s.count("1") / len(s)
    if p in (0.0, 1.0):
        return 0.0
    return float(-p * math.log2(p) - (1 - p) * math.log2(1 - p))


def test_error(f: str, y_test) -> float:
    """Fraction of the k positions where the function ``f`` (a bitstring of length k, the predicted
    labels on E) differs from E's true labels ``y_test`` ((k,) 0/1 array or tensor, E's order).
    """
    s = _check_bits("f", f)
    if hasattr(y_test, "detach"):  # torch tensor, without importing torch
        y_test = y_test.detach().cpu().numpy()
    y = np.asarray(y_test)
    if y.shape != (len(s),):
        raise ValueError(f"y_test must have shape ({len(s)},) to match f, got {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_test must hold only 0/1 labels, got values {np.unique(y)[:10].tolist()}")
    bits = np.frombuffer(s.encode("ascii"), dtype=np.uint8) - ord("0")
    return float(np.mean(bits != y.astype(np.uint8)))


def _truth_table(bits: str, n: int) -> np.ndarray:
    s = _check_bits("bits", bits)
    n = _check_int("n", n, minimum=1, maximum=16)
    if len(s) != 2 ** n:
        raise ValueError(f"bits must be a truth table of length 2**n = {2 ** n} for n={n}, got length {len(s)}")
    return np.frombuffer(s.encode("ascii"), dtype=np.uint8) - ord("0")


def boolean_critical_sample_ratio(bits: str, *, n: int = 7) -> float:
    """Fraction of the ``2**n`` inputs at which flipping at least one input bit changes the output.

    Input ``i`` is critical if ``f(i) != f(i XOR 2**j)`` for some bit ``j`` (a Hamming neighbour
    with the other output). The value does not depend on which end of the binary expansion is the
    first input. 0 for constant functions, 1 for parity; ``bits`` is the truth table of ``n`` inputs.
    """
    t = _truth_table(bits, n)
    idx = np.arange(t.size)
    critical = np.zeros(t.size, dtype=bool)
    for j in range(n):
        critical |= t != t[idx ^ (1 << j)]
    return float(critical.mean())


def boolean_expression_complexity(bits: str, *, n: int = 7) -> int:
    """Number of literals in a minimised sum-of-products (DNF) expression of a Boolean function.

    Computed with ``sympy.logic.boolalg.SOPform``: Quine-McCluskey prime implicants, then
    row/column dominance reduction of the prime-implicant table and, where that stalls, a greedy
    choice of the implicant covering the most remaining minterms. The greedy step makes the result
    an *upper bound* on the minimal DNF literal count (it is exact whenever dominance alone settles
    the cover). Each occurrence of a variable or its negation counts one; the constant functions
    have 0 literals. ``x0`` is the most significant input bit; SOPform gets slow well before n = 16.
    """
    import sympy  # slow to import: only this measure needs it
    from sympy.logic.boolalg import SOPform

    t = _truth_table(bits, n)
    minterms = np.flatnonzero(t).tolist()
    if len(minterms) in (0, t.size):
        return 0
    expr = SOPform(sympy.symbols(f"x0:{n}"), minterms)
    terms = expr.args if isinstance(expr, sympy.Or) else (expr,)
    return int(sum(len(term.args) if isinstance(term, sympy.And) else 1 for term in terms))


def critical_samples(model, x, *, radius: float, n_steps: int = 1, clip: tuple[float, float] | None = None,
                     batch_size: int = 1024, device=None) -> "torch.Tensor":
    """Which inputs are critical (Arpit et al. 2017), as an (N,) bool tensor on the CPU: a
    gradient-sign perturbation within the L-inf box of ``radius`` around the input changes the
    predicted label.

    For each input ``x`` with label ``y = model(x) > 0`` the search takes ``n_steps`` steps of size
    ``radius / n_steps`` along ``-sign(grad model(x'))`` if ``y`` is 1, ``+sign(...)`` if 0 (pushing
    the output towards the other side), each followed by projection onto
    ``[x - radius, x + radius]`` (intersected with ``clip`` when given). ``n_steps=1`` is the fast
    gradient-sign method; more steps are projected gradient descent. An input is critical if any
    iterate has the other label. This is a search, so the ratio is a lower bound on the true
    fraction of inputs with a differently labelled point in the box; for a linear model one step
    is exact.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Maps ``(b, d)`` inputs to ``(b,)`` scalar outputs; label = output > 0. Its parameters and
        training mode are left untouched (no gradients are accumulated into them).
    x : (N, d) torch tensor or array
        Inputs, flattened as the model expects.
    radius : float
        Half-width of the L-inf box, in input units, >= 0.
    n_steps, batch_size : int
        Gradient-sign steps (>= 1); inputs per forward/backward pass.
    clip : (low, high), optional
        Valid input range (e.g. pixel range); perturbed points are kept inside it.
    device : torch.device or str, optional
        Where to compute; default the device of the model's parameters (CPU if it has none).
    """
    import torch  # slow to import; only this function needs it

    from sampler.checks import check_device, check_float, check_int

    device = check_device(device, allow_none=True)
    radius = check_float("radius", radius, minimum=0.0)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if clip is not None:
        if len(clip) != 2:
            raise ValueError(f"clip must be a (low, high) pair, got {clip!r}")
        lo, hi = check_float("clip[0]", clip[0]), check_float("clip[1]", clip[1])
        if lo > hi:
            raise ValueError(f"clip must have low <= high, got clip={clip!r}")
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.get_default_dtype()
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-d (N, d) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite, got NaN or inf entries")

    def forward(inp):
        out = model(inp)
        if out.shape != (inp.shape[0],):
            raise ValueError(f"model must map (b, d) inputs to (b,) outputs, got output shape {tuple(out.shape)} "
                             f"for input shape {tuple(inp.shape)}")
        return out

    step = radius / n_steps
    result = []
    for start in range(0, x.shape[0], batch_size):
        x0 = x[start:start + batch_size].to(device=device, dtype=dtype)
        low, high = x0 - radius, x0 + radius
        if clip is not None:
            low, high = low.clamp(lo, hi), high.clamp(lo, hi)
        with torch.no_grad():
            label = forward(x0) > 0
        # +1 pushes the output up (for label 0), -1 down (for label 1).
        direction = torch.where(label, -1.0, 1.0).to(dtype).unsqueeze(1)
        flipped = torch.zeros_like(label)
        xa = x0.clone()
        for _ in range(n_steps):
            xa = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                out = forward(xa)
                (grad,) = torch.autograd.grad(out.sum(), xa)
            with torch.no_grad():
                xa = torch.minimum(torch.maximum(xa + step * direction * grad.sign(), low), high)
                flipped |= (forward(xa) > 0) != label
        result.append(flipped.cpu())
    return torch.cat(result)


def critical_sample_ratio(model, x, *, radius: float, n_steps: int = 1, clip: tuple[float, float] | None = None,
                          batch_size: int = 1024, device=None) -> float:
    """Fraction of the inputs ``x`` that are critical (see :func:`critical_samples`, which documents
    every parameter): a gradient-sign perturbation within the L-inf box of ``radius`` flips the
    predicted label ``model(x) > 0``. Returns a float in [0, 1]."""
    crit = critical_samples(model, x, radius=radius, n_steps=n_steps, clip=clip, batch_size=batch_size,
                            device=device)
    return float(crit.float().mean())


test_error.__test__ = False  # its name starts with "test": keep pytest from collecting it where imported
