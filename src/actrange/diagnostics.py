"""Per-model statistics of a layer's pre-activations and weight steps, computed on the device.

Every function takes tensors whose first dimension holds G models trained together and returns one
value per model, so a batched training engine can record all of them with a few tensor ops.
"""

import torch

from actrange.activations import Activation

PERCENTILES: dict[str, float] = {"p02": 0.02, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p98": 0.98}

# an output counts as saturated when its distance to a bound is under this share of the half-span:
# |tanh| > 0.95, sigmoid < 0.025 or > 0.975
SATURATION_MARGIN = 0.05


def _quantiles(values: torch.Tensor, qs: list[float]) -> torch.Tensor:
    """Linearly interpolated quantiles of each row (as torch.quantile), without its size limit.

    Args:
        values: [G, N] float tensor.
        qs: quantile levels in [0, 1].

    Returns:
        [len(qs), G] tensor.
    """
    sorted_values = values.sort(dim=1).values  # [G, N]
    n = values.shape[1]
    quantiles = []
    for q in qs:
        position = q * (n - 1)
        below = int(position)
        above = min(below + 1, n - 1)
        weight = position - below
        low, high = sorted_values[:, below], sorted_values[:, above]
        quantiles.append(low + (high - low) * weight)
    return torch.stack(quantiles)


def _saturated_frac(pre: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Share of each model's outputs close to a bound of a saturating activation; pre is [G, N]."""
    lo, hi = activation.bounds
    margin = SATURATION_MARGIN * (hi - lo) / 2
    outputs = activation.fn(pre)  # [G, N]
    saturated = (outputs - lo < margin) | (hi - outputs < margin)
    return saturated.float().mean(dim=1)


def _dead_frac(pre: torch.Tensor) -> torch.Tensor:
    """Share of units that are <= 0 for every image and position; pre is [G, B, U, *spatial]."""
    # move units next to the models so every other dimension can be reduced at once
    by_unit = pre.movedim(2, 1).flatten(2)  # [G, U, B * spatial]
    dead_units = (by_unit <= 0).all(dim=2)  # [G, U]
    return dead_units.float().mean(dim=1)


def layer_statistics(pre: torch.Tensor, activation: Activation) -> dict[str, torch.Tensor]:
    """Summary statistics of one hidden layer's pre-activations, one value per model.

    Args:
        pre: [G, B, U, *spatial] pre-activations of G models on a batch of B images, U units
            (channels of a conv layer with spatial H, W; features of a linear layer).
        activation: the activation the layer applies to ``pre``.

    Returns:
        float32 tensors [G] for mean, std (population), p02, p25, p50, p75, p98 over all of a
        model's values, and the health shares: saturated_frac for saturating activations,
        zero_frac (share of pre-activations <= 0) and dead_frac (share of units <= 0 throughout the
        batch) for rectifying ones; the shares that do not apply to the family are NaN.
    """
    if pre.dim() < 3:
        raise ValueError(f"pre must be [G, B, U, *spatial]; got shape {tuple(pre.shape)}")
    values = pre.detach().float()
    flat = values.flatten(1)  # [G, N]
    stats = {"mean": flat.mean(dim=1), "std": flat.std(dim=1, correction=0)}
    levels = _quantiles(flat, list(PERCENTILES.values()))  # [5, G]
    stats.update(dict(zip(PERCENTILES, levels, strict=True)))

    missing = torch.full_like(stats["mean"], float("nan"))
    if activation.family == "saturating":
        stats["saturated_frac"] = _saturated_frac(flat, activation)
        stats["zero_frac"] = missing
        stats["dead_frac"] = missing.clone()
    else:
        stats["saturated_frac"] = missing
        stats["zero_frac"] = (flat <= 0).float().mean(dim=1)
        stats["dead_frac"] = _dead_frac(values)
    return stats


def weight_step_statistics(
    weight_before: torch.Tensor, weight_after: torch.Tensor, grad: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Size of a layer's weight gradient and of the optimizer step it led to, per model.

    Args:
        weight_before: [G, ...] weights before the step.
        weight_after: [G, ...] weights after the step.
        grad: [G, ...] the gradient of the loss with respect to the weights.

    Returns:
        float32 tensors [G]: grad_norm (L2 norm of the gradient) and update_ratio
        (||after - before|| / ||before||; inf or NaN when the weights were all zero).
    """
    if not weight_before.shape == weight_after.shape == grad.shape:
        shapes = [tuple(t.shape) for t in (weight_before, weight_after, grad)]
        raise ValueError(f"weights and gradient must have one shape; got {shapes}")
    before = weight_before.detach().float().flatten(1)  # [G, P]
    step = weight_after.detach().float().flatten(1) - before  # [G, P]
    return {
        "grad_norm": grad.detach().float().flatten(1).norm(dim=1),
        "update_ratio": step.norm(dim=1) / before.norm(dim=1),
    }


def _sample_indices(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices in [0, n), uniform over k-subsets, in the order they were drawn.

    Drawing with replacement and dropping repeats gives each new index uniformly from the ones not
    yet taken, which is sampling without replacement at O(k) cost instead of a permutation of n.
    """
    if 2 * k >= n:
        return torch.randperm(n, generator=generator)[:k]
    taken = torch.empty(0, dtype=torch.long)
    while taken.numel() < k:
        draws = torch.randint(n, (k - taken.numel() + k // 8 + 8,), generator=generator)
        candidates = torch.cat([taken, draws])
        # keep the first occurrence of every index, in draw order
        unique, inverse = torch.unique(candidates, return_inverse=True)
        order = torch.arange(candidates.numel())
        first = torch.full((unique.numel(),), candidates.numel(), dtype=torch.long)
        first = first.scatter_reduce(0, inverse, order, reduce="amin")
        taken = candidates[first.sort().values]
    return taken[:k]


def sample_values(pre: torch.Tensor, k: int, generators: list[torch.Generator]) -> torch.Tensor:
    """A uniform sample without replacement of each model's values, reproducible per model.

    Args:
        pre: [G, ...] values of G models.
        k: sample size per model; all values are kept (in random order) when a model has fewer.
        generators: G CPU generators, one per model; model g's sample depends on generators[g]
            only.

    Returns:
        [G, min(k, n)] tensor on the device of ``pre``, n being the number of values per model.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    if len(generators) != pre.shape[0]:
        raise ValueError(f"need one generator per model: {pre.shape[0]} models, {len(generators)}")
    flat = pre.detach().flatten(1)  # [G, n]
    n = flat.shape[1]
    indices = torch.stack([_sample_indices(n, min(k, n), g) for g in generators])  # [G, m]
    return torch.gather(flat, 1, indices.to(flat.device))
