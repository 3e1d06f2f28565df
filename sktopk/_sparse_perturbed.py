"""Exact sparse sampler of the perturbed k-th largest value, and the dense/sparse choice.

The dense estimator perturbs every column: N*C*B Gaussian draws per call. Here
only the m highest scores of each row (the candidates) are perturbed; the other
columns enter through the few of them that land above the candidates' k-th
perturbed value, drawn exactly by thinning. The value and index of every draw
have exactly the dense estimator's distribution (see
:func:`kth_largest_perturbed_sparse`, Notes), at a cost of O(m) draws per row and
draw plus the expected number of such columns.

:func:`sample_sparse_or_none` makes the choice between the two paths for one
call, with the cost rule of :func:`choose_sampler`. Where the compiled CPU
kernel runs, both paths run there (``sktopk._cpu_kernel``, same method) under
the kernel's own cost table. The rule's constants are measured on CPU; on
CUDA, "auto" keeps the dense path (the fused kernel) until GPU constants are
measured, and the sparse path runs when forced.
"""

import collections
import functools
import math
import types

import torch

from . import _cpu_kernel, _triton_dispatch
from ._sampler_plan import SamplerPlan

#: Accepted values of the ``sampler`` parameter.
SAMPLERS = ("auto", "dense", "sparse")

# Cost models of the "auto" rule, in nanoseconds per unit on one CPU thread,
# fitted by benchmarks/calibrate_sampler.py (non-negative least squares on the
# relative error of timed calls over shapes and score regimes; see
# benchmarks/RESULTS.md, section 1a). Only their ratios matter. The rule is a
# fixed function of the call, never timed at run time, so that a seeded fit
# draws the same numbers on every run. Two models: both paths in torch
# operations, and both paths in the compiled CPU kernel (sktopk/_cpu_kernel.c),
# used when the kernel is available.
_Costs = collections.namedtuple("_Costs", [
    "dense_draw",  # dense: one Gaussian draw and its share of the selection
    "dense_pair",  # dense: per (row, draw)
    "dense_fixed",
    "pool_score",  # the candidate pool: per score of the row
    "pool_slot",  # per slot of the pool
    "candidate",  # one perturbed candidate and its share of the k-th largest
    "pair",  # per (row, draw) of the sparse path
    "group",  # per (row, draw) and group: its rate and first proposal gap
    "proposal",  # per proposed column: thinning, truncated draw, merge
    # A floor for the fixed costs of a sparse call, so that tiny calls stay dense.
    "fixed",
    # The sparse path is taken when estimated below margin x the dense cost.
    "margin",
])
# The fit's per-row and per-(row, draw) terms of the torch sparse path came out as
# zero; its fixed term covers ~100 small torch operations (the fit, over calls
# with N >= 256, puts only 0.04 ms there: 0.5 ms is a floor).
# The torch model is optimistic about the sparse path on small rows: on the scores
# of benchmarks/bench_losses.py at C <= 1000 it predicts 0.53-0.65 of the dense
# cost where 0.73-1.08 is measured (at C >= 10000 it is within 1.25x), so its
# margin is 0.6 rather than its median error (0.8).
_TORCH_COSTS = _Costs(dense_draw=4.6, dense_pair=1530.0, dense_fixed=2.9e5, pool_score=3.6,
                      pool_slot=44.0, candidate=12.0, pair=0.0, group=410.0, proposal=140.0,
                      fixed=0.5e6, margin=0.6)
# The kernel's dense cost is without its column skipping (an upper bound); its
# fitted fixed costs (0 for both paths) are replaced by floors: 0.05 ms dense, and
# 0.25 ms sparse, which also covers the rule itself (the calibration times the
# kernel alone; the order statistics, the bisection and the Python around them
# take 0.2-0.5 ms a call), so that tiny calls stay on the dense path.
# Median relative error of the fit: 7% dense (max 11%, over C = 32 to 10000; the
# dense costs were refitted alone after the draws started from the row's best
# columns, benchmarks/results/calibrate_sampler_kernel_dense_v8.log), 15% sparse
# (max 47%: one cost per proposal, where a kept one costs several times a rejected
# one; the rule cannot count the kept ones in advance). The proposal cost was refitted
# after proposals went eight at a time (27.8 -> 20.6 ns,
# benchmarks/results/calibrate_sampler_kernel_v9.log, where the other constants came
# out within 3% of these).
_KERNEL_COSTS = _Costs(dense_draw=1.74, dense_pair=191.0, dense_fixed=5e4, pool_score=0.42,
                       pool_slot=6.9, candidate=2.50, pair=0.0, group=114.0, proposal=20.6,
                       fixed=2.5e5, margin=0.85)
# Candidate counts tried, as multiples of k; pool sizes, as multiples of m.
_MENU = (1, 2, 4, 8, 16, 32)
_POOL_MENU = (1, 2, 4, 8, 16, 32)
_POOL_MAX = 4096
_ESTIMATE_ROWS = 16
_LOG_Q_FLOOR = -700.0  # q below exp(-700) ~ 1e-304: no proposal can happen in float64
_TINY = torch.finfo(torch.float64).tiny


def check_sampler(sampler, noise="independent"):
    """Raise unless ``sampler`` is one of :data:`SAMPLERS` and fits ``noise``.

    A :class:`~sktopk._sampler_plan.SamplerPlan` (what the loss modules pass for
    "auto") is accepted too.
    """
    if isinstance(sampler, SamplerPlan):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    if sampler == "sparse" and noise == "shared":
        raise ValueError(
            "sampler='sparse' needs noise='independent': shared noise couples the rows of a "
            "call, which the sparse sampler cannot reproduce exactly. Use sampler='auto' "
            "(it takes the dense path for shared noise) or noise='independent'."
        )
    return sampler


def _group_size(n_columns, size):
    # Groups of b columns: one max pass over the scores, then a topk over C / b
    # maxima and one over the size * b columns of the best groups. Timed on CPU
    # (C from 1000 to 100000, size from 49 to 1025): b = 4 or 8 is the fastest
    # as long as the maxima number at least 5 * size (larger b, or fewer maxima,
    # make the second topk the larger one).
    for b in (8, 4, 2):
        if n_columns // b >= 5 * size:
            return b
    return 1


def candidate_pool(x, size):
    """The ``size`` highest scores of each row, sorted, with their columns.

    Exact values (ties included) without a ``topk`` over all C columns: the
    columns are split into about C / b strided groups, the ``size`` groups with
    the highest maxima are gathered, and the topk is taken over those. Any element
    among the ``size`` highest lies in such a group (its group's maximum is at
    least as large), so the values returned are the row's top ``size`` values.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
    size : int
        At most C.

    Returns
    -------
    values : torch.Tensor of shape (N, size), sorted in descending order
    columns : torch.Tensor of shape (N, size), int64
    """
    n_rows, n_columns = x.shape
    b = _group_size(n_columns, size)
    if b == 1:
        return torch.topk(x, size, dim=1, sorted=True)
    # Group g < G holds the columns g, g + G, ..., g + (b - 1) G (a strided view,
    # no copy); the r = C - G b leftover columns are groups of one.
    n_groups = n_columns // b
    n_left = n_columns - n_groups * b
    x = x.contiguous()
    blocks = x.as_strided((n_rows, b, n_groups), (x.stride(0), n_groups, 1))
    group_max = blocks.amax(dim=1)
    if n_left:
        group_max = torch.cat([group_max, x[:, n_groups * b:]], dim=1)
    top_groups = torch.topk(group_max, size, dim=1, sorted=False).indices.unsqueeze(2)
    offsets = torch.arange(b, device=x.device) * n_groups
    columns = top_groups + offsets  # (N, size, b)
    single = top_groups >= n_groups
    if n_left:
        # A leftover group holds only its first slot; the other slots are blanked.
        columns = torch.where(single, n_groups * b + (top_groups - n_groups), columns)
        blank = single & (offsets > 0)
    columns = columns.reshape(n_rows, -1)
    candidates = x.gather(1, columns)
    if n_left:
        candidates = candidates.masked_fill(blank.reshape(n_rows, -1), -math.inf)
    values, where = torch.topk(candidates, size, dim=1, sorted=True)
    return values, columns.gather(1, where)


def _log_tail(z):
    """log Q(z) = log P(Z > z) for a standard Gaussian Z, accurate in both tails."""
    return torch.special.log_ndtr(-z)


def _expected_kth(top, k, epsilon, sizes):
    """Deterministic estimates of the k-th largest of ``top[:, :m] + epsilon * Z``.

    For each m in ``sizes``, the root u of ``sum_{j < m} Q((u - s_j) / eps) = k - 1/2``
    (the expected number of perturbed candidates above u), by bisection.
    Returns shape (rows, len(sizes)).
    """
    s = top.unsqueeze(1)  # (rows, 1, P)
    inside = torch.arange(top.shape[1], device=top.device) < torch.tensor(
        sizes, device=top.device).unsqueeze(1)  # (len(sizes), P)
    low = (top[:, k - 1] - 8.0 * epsilon).unsqueeze(1).expand(-1, len(sizes))
    high = (top[:, 0] + 8.0 * epsilon).unsqueeze(1).expand(-1, len(sizes))
    for _ in range(8):  # the bracket to 1/256 of its width: enough for a cost estimate
        mid = 0.5 * (low + high)
        mass = torch.special.ndtr((s - mid.unsqueeze(2)) / epsilon) * inside
        above = mass.sum(2) > k - 0.5
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return 0.5 * (low + high)


def _fixed_sparse_cost(n_rows, n_columns, n_perturbations, m, pool, n_groups, costs):
    """Estimated cost (ns) of a sparse call without its proposals."""
    pairs = n_rows * n_perturbations
    return (costs.fixed + n_rows * (costs.pool_score * n_columns + costs.pool_slot * (pool + 1))
            + pairs * (costs.candidate * m + costs.pair + costs.group * n_groups))


@functools.lru_cache(maxsize=64)
def _menu(k, n_columns, width):
    """The (m, pool) sizes the rule tries with ``width`` sorted top scores per row.

    Returns ``(sizes, groups, slots)``: the candidate counts, the proposal groups
    (:func:`proposal_groups`) of each (m, pool), and the sorted score positions
    beyond ``max(sizes)`` the estimate reads (the groups' highest scores). Cached
    (each decision reads it twice, and a fit asks for the same shapes), so all
    three are read-only.
    """
    sizes = tuple(k * factor for factor in _MENU if k * factor < min(n_columns, width))
    groups = {}
    for m in sizes:
        pools = {min(m * factor, n_columns - 1, _POOL_MAX) for factor in _POOL_MENU}
        for pool in sorted(pools):
            if m <= pool < width:
                groups[m, pool] = proposal_groups(m, pool, n_columns)
    slots = tuple(sorted({slot for bound_slots, _ in groups.values() for slot in bound_slots}))
    return sizes, types.MappingProxyType(groups), slots


@functools.lru_cache(maxsize=64)
def _kernel_rule_plan(k, n_columns, width):
    """The menu of :func:`_menu` as int64 tensors for the compiled rule (cached, read-only).

    Keys: ``width``, ``head`` (the largest candidate count), ``edges`` (the
    order statistics' segment edges beyond the head, then the width),
    ``sizes``, ``slots`` (every group bound's position), ``combos`` (the (m,
    pool) pairs in order), ``combo_size`` (index into sizes), ``combo_m``,
    ``combo_pool``, ``combo_groups`` and, per combination, its groups as
    ``pair_slot`` (index into slots) and ``pair_length`` from ``pair_start``.
    """
    sizes, groups, slots = _menu(k, n_columns, width)
    head = max(sizes)
    column = {slot: j for j, slot in enumerate(slots)}
    combos = list(groups)
    pair_start, pair_slot, pair_length = [0], [], []
    for bound_slots, lengths in groups.values():
        pair_slot += [column[slot] for slot in bound_slots]
        pair_length += list(lengths)
        pair_start.append(len(pair_slot))

    def ints(values):
        return torch.tensor(values, dtype=torch.int64)

    return {"width": width, "head": head,
            "edges": ints(sorted({slot for slot in slots if slot >= head}) + [width]),
            "sizes": ints(sizes), "slots": ints(slots), "combos": combos,
            "combo_size": ints([sizes.index(m) for m, _ in combos]),
            "combo_m": ints([m for m, _ in combos]), "combo_pool": ints([p for _, p in combos]),
            "combo_groups": ints([len(lengths) for _, lengths in groups.values()]),
            "pair_start": ints(pair_start), "pair_slot": ints(pair_slot),
            "pair_length": ints(pair_length)}


def _rule_width(k, n_columns):
    """Sorted positions the rule reads per row: the widest pool of the menu plus one, or C."""
    return min(n_columns, min(k * _MENU[-1] * _POOL_MENU[-1], _POOL_MAX) + 1)


@functools.lru_cache(maxsize=64)
def _estimate_rows(n_rows):
    """The rows the rule reads: at most 16, evenly spread (int64, cached, read-only)."""
    step = max(1, n_rows // _ESTIMATE_ROWS)
    return torch.tensor(list(range(0, n_rows, step))[:_ESTIMATE_ROWS], dtype=torch.int64)


def _rule_estimates(x, k, epsilon, n_perturbations, n_rows, costs, kernel):
    """``_sparse_costs(_subset_top(x, k), ...)``, compiled where the CPU kernel takes ``x``.

    ``kernel``: whether it does (``_triton_dispatch.cpu_kernel_takes``, which the
    caller has already asked).
    """
    n_columns = x.shape[1]
    if not kernel:
        return _sparse_costs(_subset_top(x, k), k, epsilon, n_perturbations, n_columns, n_rows,
                             costs)
    width = _rule_width(k, n_columns)
    if not _menu(k, n_columns, width)[0]:
        return {}
    plan = _kernel_rule_plan(k, n_columns, width)
    values = _cpu_kernel.rule_estimates(
        x, plan, _estimate_rows(x.shape[0]), k, epsilon, n_rows, n_perturbations,
        (costs.fixed, costs.pool_score, costs.pool_slot, costs.candidate, costs.pair,
         costs.group, costs.proposal))
    return dict(zip(plan["combos"], values, strict=True))


def _sparse_costs(top_values, k, epsilon, n_perturbations, n_columns, n_rows,
                  costs=_TORCH_COSTS):
    """Estimated cost (ns) of the sparse path for each (m, pool) the sorted ``top_values`` cover.

    Reads ``top_values[:, :max(sizes)]`` and the columns at the groups' slots only
    (:func:`_menu`).
    """
    sizes, groups, slots = _menu(k, n_columns, top_values.shape[1])
    if not sizes:
        return {}
    top = top_values.double()
    # float32 is plenty for a cost estimate; the compiled version avoids ~50 small
    # torch operations (0.7 ms, as much as a sparse call on a small batch).
    head = top[:, :max(sizes)].float()
    if top.device.type == "cpu" and _cpu_kernel.library() is not None:
        u = _cpu_kernel.expected_kth(head, k, epsilon, sizes).double()
    else:
        u = _expected_kth(head, k, epsilon, sizes).double()  # (rows, sizes)
    column = {slot: j for j, slot in enumerate(slots)}
    # The mean over rows of each group's rate needs the scores at a few slots only.
    rates = _log_tail((u.unsqueeze(2) - top[:, list(slots)].unsqueeze(1)) / epsilon).exp().mean(0)
    rates = rates.tolist()  # (sizes, slots)
    pairs = n_rows * n_perturbations
    estimates = {}
    for (m, pool), (bound_slots, lengths) in groups.items():
        rate = rates[sizes.index(m)]
        per_pair = sum(length * rate[column[slot]]
                       for slot, length in zip(bound_slots, lengths, strict=True))
        estimates[m, pool] = (_fixed_sparse_cost(n_rows, n_columns, n_perturbations, m, pool,
                                                 len(lengths), costs)
                              + costs.proposal * pairs * per_pair)
    return estimates


def proposal_cap(n_rows, n_columns):
    """Expected proposals handled at once: their temporaries (~60-100 bytes each)
    then stay under the size of the (float32) scores."""
    return n_rows * n_columns / 32


def _dense_cost(n_rows, n_columns, n_perturbations, costs=_TORCH_COSTS):
    pairs = n_rows * n_perturbations
    return costs.dense_fixed + pairs * (costs.dense_draw * n_columns + costs.dense_pair)


def choose_sampler(top_values, k, epsilon, n_perturbations, n_columns, n_rows=None,
                   kernel=False):
    """The cheaper path for one call: ("sparse", (m, pool)) or ("dense", None).

    The rule: with a row's sorted top scores ``s_(1) >= s_(2) >= ...``, a
    candidate count ``m`` from ``k * (1, 2, 4, 8, 16, 32)`` (below C) and a pool
    size from ``m * (1, 2, 4, ..., 32)`` (below C, at most 4096), the candidates'
    k-th perturbed value is stood in for by ``u_m``, the root of
    ``sum_{j <= m} Q((u_m - s_(j)) / eps) = k - 1/2``, and the expected
    proposals per draw are ``sum_t L_t Q((u_m - b_t) / eps)`` over the pool's
    tiers (length ``L_t``, highest score ``b_t``) and the outside group
    (``L = C``, ``b = s_(pool+1)``), averaged over the rows given. The sparse cost
    adds the pool, the ``N B m`` candidate draws, the per-group rates and the
    proposals, each weighted by a per-unit cost measured on CPU; the dense cost
    is ``N C B`` draws plus a per-(row, draw) overhead. The sparse path is taken
    when its best estimate is below a margin times the dense one (0.6 for the
    torch model, 0.85 for the kernel's). Once the candidates are drawn, the
    torch sparse path still hands over to the dense one if the actual expected
    number of proposals exceeds the dense cost (see
    :func:`sample_sparse_or_none`).

    Parameters
    ----------
    top_values : torch.Tensor of shape (R, W)
        Sorted top scores of R rows (all the call's rows or an evenly spread
        subset), W the widest pool tried plus one, or C.
    k, epsilon, n_perturbations, n_columns
        The call's parameters.
    n_rows : int, optional
        Rows of the call; default R.
    kernel : bool, default=False
        Whether both paths run in the compiled CPU kernel (its own cost model).

    Returns
    -------
    (str, (int, int) or None)
    """
    n_rows = top_values.shape[0] if n_rows is None else n_rows
    costs = _KERNEL_COSTS if kernel else _TORCH_COSTS
    estimates = _sparse_costs(top_values, k, epsilon, n_perturbations, n_columns, n_rows, costs)
    return _cheaper(estimates, _dense_cost(n_rows, n_columns, n_perturbations, costs), costs)


def _cheaper(estimates, dense, costs):
    """The rule's verdict from the sparse estimates and the dense cost (:func:`choose_sampler`)."""
    if not estimates:
        return "dense", None
    best = min(estimates, key=estimates.get)
    return ("sparse", best) if estimates[best] < costs.margin * dense else ("dense", None)


def _subset_top(x, k):
    """Sorted top scores of at most 16 evenly spread rows, wide enough for the whole menu.

    With the compiled CPU kernel, only the positions the rule reads are filled
    (:func:`_menu`; NaN elsewhere): nested selections instead of a sort of
    thousands of scores per row (4 ms at C = 10000 in ``torch.topk``).
    """
    n_rows, n_columns = x.shape
    width = _rule_width(k, n_columns)
    if _triton_dispatch.cpu_kernel_takes(x, k, "independent"):
        sizes, _, slots = _menu(k, n_columns, width)
        head = max(sizes, default=0)
        return _cpu_kernel.order_statistics(x, _estimate_rows(n_rows).tolist(), width, head,
                                            [slot for slot in slots if slot >= head])
    # The same rows as _estimate_rows, as a view (no index tensor to move to the device).
    step = max(1, n_rows // _ESTIMATE_ROWS)
    return torch.topk(x[::step][:_ESTIMATE_ROWS], width, dim=1, sorted=True).values


def _geometric_proposals(log_q, log_1mq, lengths, generator):
    """Positions proposed with probability q each, independently, in every unit.

    A unit is a range of ``lengths[i]`` positions (a (row, draw) pair's tier, or
    its whole row). Gaps between successive proposed positions are
    Geometric(q): drawn in blocks of L per unit still short of its end, L
    doubling at each round, so the number of rounds is logarithmic in the
    largest count.

    Returns
    -------
    units, positions : torch.Tensor of shape (P,), int64
    """
    device = log_q.device
    active = torch.nonzero(log_q > _LOG_Q_FLOOR).squeeze(1)
    if active.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    lengths = torch.as_tensor(lengths, dtype=torch.float64, device=device).expand(log_q.shape)
    end = lengths[active]
    rate = log_1mq[active]
    position = torch.full((active.numel(),), -1.0, dtype=torch.float64, device=device)
    longest = float(end.max())
    mean_count = float((log_q[active].exp() * end).mean())
    # Most units propose nothing: one gap each first drops them, then the
    # survivors draw blocks sized from the mean count, doubling.
    next_length = int(min(longest, math.ceil(1.5 * mean_count + 4.0 * math.sqrt(mean_count)
                                             + 4)))
    length = 1 if mean_count < 1.0 else next_length
    units_out, positions_out = [], []
    while active.numel() > 0:
        uniform = torch.rand((active.numel(), length), dtype=torch.float64, device=device,
                             generator=generator)
        # 1 - U lies in (0, 1]; log1p(-q) = log(1 - q) exactly from the other tail.
        gaps = uniform.neg_().log1p_().div_(rate.unsqueeze(1)).floor_().add_(1.0)
        cumulative = gaps.cumsum_(dim=1).add_(position.unsqueeze(1))
        inside = cumulative < end.unsqueeze(1)
        # Positions increase along a row: the masked ones come in (unit, position) order.
        units_out.append(active.repeat_interleave(inside.sum(1)))
        positions_out.append(cumulative[inside].long())
        position = cumulative[:, -1]
        still = position < end
        active, position, end, rate = active[still], position[still], end[still], rate[still]
        length, next_length = next_length, int(min(2 * next_length, longest))
    return torch.cat(units_out), torch.cat(positions_out)


def proposal_groups(m, pool, n_columns):
    """The groups of :func:`kth_largest_perturbed_sparse` (Notes, 3) for m candidates.

    Returns ``(bound_slots, lengths)``: for each group, the pool slot holding its
    highest score and the number of positions it proposes from. The pool's tiers
    (:func:`tier_edges`) come first; then, when the pool does not cover the row,
    the outside group, which proposes over all C columns (the pool's are dropped).
    """
    edges = tier_edges(m, pool)
    bound_slots = edges[:-1]
    lengths = [end - start for start, end in zip(edges[:-1], edges[1:], strict=True)]
    if pool < n_columns:
        bound_slots, lengths = bound_slots + [pool], lengths + [n_columns]
    return bound_slots, lengths


def tier_edges(m, pool):
    """Slot boundaries of the tiers between the m candidates and the pool's end.

    ``[m, 2m), [2m, 4m), ...`` up to ``pool``: each tier's proposal rate is set by
    its own highest score, so columns far below the candidates are proposed
    rarely (a single bound for all of them would propose each at the rate of
    the best one).
    """
    edges = [m]
    while edges[-1] < pool:
        edges.append(min(pool, 2 * edges[-1]))
    return edges


def kth_largest_perturbed_sparse(x, k, epsilon, n_perturbations, generator=None, m=None,
                                 top=None, max_proposals=None, pool=None):
    """Exact sparse sampler of the k-th largest value of ``x + epsilon * Z`` along dim 1.

    Same distribution of the value and index of every draw as
    :func:`sktopk._perturbed.kth_largest_perturbed_torch` with independent noise.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
        Scores, validated and detached.
    k : int
        Rank, ``1 <= k <= C``.
    epsilon : float
        Noise scale, > 0.
    n_perturbations : int
        Draws B.
    generator : torch.Generator, optional
        The only source of randomness.
    m : int, optional
        Candidates per row, ``k <= m <= C``; default ``min(C, 2 k)``.
    top : tuple of torch.Tensor, optional
        ``candidate_pool(x, min(pool + 1, C))`` if already computed (more
        columns are allowed).
    max_proposals : float, optional
        If the expected number of proposals (known once the candidates are
        drawn) exceeds it, return None: the caller then takes the dense path.
    pool : int, optional
        Sorted slots used, ``m <= pool <= C``; default ``m``. The slots
        ``m .. pool - 1`` are proposed in tiers (:func:`tier_edges`), each at the
        rate of its highest score; the columns outside the pool at the rate of
        the highest of them.

    Returns
    -------
    values : torch.Tensor of shape (N,)
    indices : torch.Tensor of shape (N, B), int64

    Notes
    -----
    Let A be the m highest-scoring columns of a row (ties broken arbitrarily),
    for one draw ``P_a = s_a + eps Z_a`` (a in A) and ``u`` the k-th largest
    ``P_a``. The other columns' perturbed values ``X_i = s_i + eps Z_i`` are
    independent of the ``P_a``. Given u:

    1. Let E = {i not in A : X_i > u}. The k-1 candidates above u, u itself and
       the ``X_i`` of E are at least k values >= u, and every other value is
       < u (a candidate below u, or ``X_i <= u``). So the k-th largest of all C
       perturbed values, and its column, are those of this set: the values
       ``X_i <= u`` never matter, only the membership of E and the values on it.
    2. Given u, the events ``X_i > u`` are independent with probabilities
       ``p_i = Q((u - s_i) / eps)`` (Q the Gaussian tail), and given
       ``X_i > u``, ``X_i`` follows its Gaussian truncated to ``(u, inf)``.
    3. Write ``X_i = s_i - eps * Phi^-1(t_i)`` with ``t_i`` uniform on (0, 1)
       (its tail mass): ``X_i > u`` iff ``t_i < p_i``, and given that, ``t_i``
       is uniform on (0, p_i), which is the truncated Gaussian of 2. Split the
       other columns into groups, each with a score bound ``b_g >= s_i`` (the
       sorted tiers of the pool, and the columns outside the pool), so that
       ``p_i <= q_g = Q((u - b_g) / eps)``: only the columns with ``t_i < q_g``
       can matter. Each column of a group is one independently with
       probability ``q_g``, so they are proposed with Geometric(``q_g``) gaps
       between successive columns (the pool's columns are proposed too by the
       outside group, then dropped), and a proposed column draws
       ``t_i = q_g V``, V uniform on (0, 1], and is kept iff its ``X_i > u``.
       This is the thinning of the dense estimator's own draws: E and the
       values on it have their exact joint law.

    The draw's value and column are then the k-th largest of the candidates and
    the accepted columns (only rows with an accepted column need this merge).
    Rounding aside, this is exact: u, the tails and the truncated draws are
    computed in float64 (candidates in float32 for float32/float16/bfloat16
    scores, without the half-precision rounding of the perturbed values that the
    dense path applies). Two guards act only at probabilities below 1e-300 per
    column and draw: q < exp(-700) proposes nothing, and a tail mass that
    underflows float64 is raised to its smallest normal number.
    """
    n_rows, n_columns = x.shape
    if m is None:
        m = min(n_columns, 2 * k)
    if not k <= m <= n_columns:
        raise ValueError(f"m={m} must lie between k={k} and the number of columns {n_columns}.")
    pool = m if pool is None else pool
    if not m <= pool <= n_columns:
        raise ValueError(f"pool={pool} must lie between m={m} and the number of columns "
                         f"{n_columns}.")
    if top is None:
        top = candidate_pool(x, min(pool + 1, n_columns))
    top_values, top_columns = top
    if top_values.shape[1] < min(pool + 1, n_columns):
        raise ValueError(f"top holds {top_values.shape[1]} columns; pool={pool} needs "
                         f"{min(pool + 1, n_columns)}.")
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    device = x.device
    n_draws = n_perturbations
    candidates = top_values[:, :m].to(work_dtype)
    candidate_columns = top_columns[:, :m]

    perturbed = torch.randn((n_rows, n_draws, m), dtype=work_dtype, device=device,
                            generator=generator)
    perturbed.mul_(epsilon).add_(candidates.unsqueeze(1))
    if m == k:
        kth, where = perturbed.min(dim=2)
        best_values, best_where = perturbed, None
    else:
        best_values, best_where = torch.topk(perturbed, k, dim=2, sorted=True)
        kth, where = best_values[:, :, k - 1], best_where[:, :, k - 1]
    values = kth.double()
    indices = candidate_columns.gather(1, where)
    if m == n_columns:
        return values.mean(dim=1).to(x.dtype), indices

    u = values.reshape(-1)
    # The groups of Notes 3: the pool's tiers (slot ranges), then the outside.
    bound_slots, lengths = proposal_groups(m, pool, n_columns)
    bounds = top_values[:, bound_slots].double().repeat_interleave(n_draws, dim=0)
    z = (u.unsqueeze(1) - bounds) / epsilon  # (pairs, groups)
    log_q, log_1mq = _log_tail(z), torch.special.log_ndtr(z)
    lengths = torch.tensor(lengths, dtype=torch.float64, device=device)
    expected = log_q.exp() * lengths  # proposals per pair and group, in expectation
    per_pair = expected.sum(1)
    total = float(per_pair.sum())
    if max_proposals is not None and total > max_proposals:
        return None
    # Pairs in blocks of about proposal_cap expected proposals each, so that the
    # proposals' temporaries stay below the size of the scores.
    budget = max(proposal_cap(n_rows, n_columns), 65536.0)  # a few MB at least
    n_blocks = max(1, math.ceil(total / budget))
    cuts = torch.searchsorted(torch.cumsum(per_pair, 0),
                              budget * torch.arange(1, n_blocks, dtype=per_pair.dtype,
                                                    device=device))
    starts = [0] + cuts.tolist()
    ends = cuts.tolist() + [u.numel()]
    groups = _Groups(x, u, top_values, top_columns, m, pool, log_q, log_1mq, lengths, n_draws,
                     epsilon, generator)
    kept = [groups.accepted(start, end) for start, end in zip(starts, ends, strict=True)
            if end > start]
    kept = [part for part in kept if part is not None]
    if kept:
        pairs, columns, drawn = (torch.cat(parts) for parts in zip(*kept, strict=True))
        _merge_accepted(k, values, indices, best_values, best_where, candidate_columns, pairs,
                        columns, drawn)
    return values.mean(dim=1).to(x.dtype), indices


class _Groups:
    """Proposals and acceptance for the groups of Notes 3, over a block of pairs."""

    def __init__(self, x, u, top_values, top_columns, m, pool, log_q, log_1mq, lengths, n_draws,
                 epsilon, generator):
        self.x, self.u = x, u
        self.top_values, self.top_columns = top_values, top_columns
        edges = tier_edges(m, pool)
        self.edges = torch.tensor(edges[:-1], dtype=torch.long, device=x.device)
        self.n_tiers, self.pool = len(edges) - 1, pool
        self.log_q, self.log_1mq, self.lengths = log_q, log_1mq, lengths
        self.n_draws, self.epsilon, self.generator = n_draws, epsilon, generator

    def accepted(self, start, end):
        """Accepted (pairs, columns, values) of the pairs ``start:end``, or None."""
        n_groups = self.log_q.shape[1]
        n_columns = self.x.shape[1]
        units, positions = _geometric_proposals(
            self.log_q[start:end].reshape(-1), self.log_1mq[start:end].reshape(-1),
            self.lengths.repeat(end - start), self.generator)
        units = units + start * n_groups  # into the flattened (pairs, groups) arrays
        pairs = torch.div(units, n_groups, rounding_mode="floor")
        group = units - pairs * n_groups
        rows = torch.div(pairs, self.n_draws, rounding_mode="floor")
        in_pool = group < self.n_tiers
        # Flat gathers (take) are much cheaper than 2-d advanced indexing here.
        columns = positions
        if self.n_tiers:
            slots = (self.edges[group.clamp(max=self.n_tiers - 1)] + positions).clamp(
                max=self.top_columns.shape[1] - 1)  # outside positions: masked just below
            pooled = self.top_columns.take(rows * self.top_columns.shape[1] + slots)
            columns = torch.where(in_pool, pooled, positions)
        scores = self.x.take(rows * n_columns + columns).double()
        # A proposed column is perturbed as s - eps * ndtri(t), t its tail mass,
        # uniform on (0, q]: it lands above u with probability p / q, and then
        # follows its Gaussian truncated to (u, inf) (Notes, 3).
        uniform = torch.rand(pairs.shape, dtype=torch.float64, device=self.x.device,
                             generator=self.generator)
        tail_mass = uniform.neg_().log1p_().add_(self.log_q.take(units)).exp_().clamp_min_(
            _TINY)
        drawn = scores - self.epsilon * torch.special.ndtri(tail_mass)
        accepted = drawn > self.u.take(pairs)
        if self.pool < n_columns:
            # The outside group proposes the pool's columns too: a score above the
            # bound is one of them, a score tied with it is looked up.
            bound = self.top_values.take(rows * self.top_values.shape[1] + self.pool).double()
            outside = ~in_pool
            accepted &= ~outside | (scores <= bound)
            tied = accepted & outside & (scores == bound)
            if bool(tied.any()):
                where = torch.nonzero(tied).squeeze(1)
                member = (self.top_columns[rows[where], :self.pool]
                          == columns[where].unsqueeze(1)).any(1)
                accepted[where[member]] = False
        if not bool(accepted.any()):
            return None
        return pairs[accepted], columns[accepted], drawn[accepted]


def _merge_accepted(k, values, indices, best_values, best_where, candidate_columns, pairs,
                    columns, drawn):
    """Redo the k-th largest of the pairs that have accepted columns above u.

    Only the k best candidates of a pair (``best_values``, at candidate slots
    ``best_where``; all m = k candidates when ``best_where`` is None) and its k
    best accepted columns can hold the k-th place.
    """
    n_draws = values.shape[1]
    device = values.device
    # The k highest accepted values of each pair: sort by value, then (stably) by pair.
    order = torch.argsort(drawn, descending=True)
    order = order[torch.argsort(pairs[order], stable=True)]
    pairs, columns, drawn = pairs[order], columns[order], drawn[order]
    affected, group, counts = torch.unique_consecutive(pairs, return_inverse=True,
                                                       return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(pairs.numel(), device=device) - starts[group]
    keep = rank < k
    n_affected = affected.numel()
    extra_values = torch.full((n_affected, k), -math.inf, dtype=torch.float64, device=device)
    extra_columns = torch.zeros((n_affected, k), dtype=torch.long, device=device)
    extra_values[group[keep], rank[keep]] = drawn[keep]
    extra_columns[group[keep], rank[keep]] = columns[keep]

    m = candidate_columns.shape[1]
    rows = torch.div(affected, n_draws, rounding_mode="floor").unsqueeze(1)
    slots = (torch.arange(k, device=device) if best_where is None
             else best_where.reshape(-1, k)[affected])
    pool_values = torch.cat([best_values.reshape(-1, k)[affected].double(), extra_values], dim=1)
    pool_columns = torch.cat([candidate_columns.take(rows * m + slots), extra_columns], dim=1)
    top_k = torch.topk(pool_values, k, dim=1, sorted=True)
    values.view(-1)[affected] = top_k.values[:, k - 1]
    indices.view(-1)[affected] = pool_columns.gather(1, top_k.indices[:, k - 1:]).squeeze(1)


def dense_cost_in_proposals(n_rows, n_columns, n_perturbations):
    """The dense path's cost expressed as a number of proposals (the fallback threshold)."""
    return _dense_cost(n_rows, n_columns, n_perturbations) / _TORCH_COSTS.proposal


def sample_sparse_or_none(x, k, epsilon, n_perturbations, generator, sampler):
    """The sparse result, or None when ``sampler="auto"`` finds the dense path cheaper.

    ``sampler`` is "auto", "sparse" or the
    :class:`~sktopk._sampler_plan.SamplerPlan` of a loss module (a decision
    reused over its calls). The choice (:func:`choose_sampler`) looks at the
    sorted top scores of at most 16 evenly spread rows; the
    candidate pool of every row is computed only once the sparse path is
    chosen, at the chosen size. Under ``sampler="auto"`` nothing is computed
    when the cheapest sparse call (k candidates, no proposal) would already
    cost the margin times the dense one.
    """
    n_rows, n_columns = x.shape
    # With the compiled CPU kernel both paths run there, under its own cost model.
    kernel = _triton_dispatch.cpu_kernel_takes(x, k, "independent")
    costs = _KERNEL_COSTS if kernel else _TORCH_COSTS
    if sampler != "sparse":
        if x.device.type != "cpu":
            return None  # the cost constants are CPU ones (module docstring)
        dense = _dense_cost(n_rows, n_columns, n_perturbations, costs)
        floor = _fixed_sparse_cost(n_rows, n_columns, n_perturbations, k, k, 1, costs)
        if n_columns <= k + 1 or floor >= costs.margin * dense:
            return None
    if sampler == "sparse":
        # The cheapest sparse sizes, even where dense would be cheaper; with
        # C <= k + 1 every column is a candidate.
        estimates = _rule_estimates(x, k, epsilon, n_perturbations, n_rows, costs, kernel)
        m, pool = min(estimates, key=estimates.get) if estimates else (n_columns, n_columns)
        max_proposals = None
    else:
        def decide():
            # choose_sampler's verdict; with the kernel, its estimates come from C.
            return _cheaper(
                _rule_estimates(x, k, epsilon, n_perturbations, n_rows, costs, kernel), dense,
                costs)

        if isinstance(sampler, SamplerPlan):
            path, sizes = sampler.decide(
                (n_columns, k, float(epsilon), n_perturbations, x.dtype, kernel), decide)
        else:
            path, sizes = decide()
        if path == "dense":
            return None
        m, pool = sizes
        max_proposals = dense_cost_in_proposals(n_rows, n_columns, n_perturbations)
    if kernel:
        return _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_perturbations,
                                                            generator, m=m, pool=pool)
    return kth_largest_perturbed_sparse(x, k, epsilon, n_perturbations, generator, m=m,
                                        pool=pool, max_proposals=max_proposals)
