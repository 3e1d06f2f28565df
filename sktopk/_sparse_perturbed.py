"""Exact sparse sampler of the perturbed k-th largest value, and the dense/sparse choice.

The dense estimator perturbs every column: N*C*B Gaussian draws per call. Here
only the m highest scores of each row (the candidates) are perturbed; the other
columns enter through the few of them that land above the candidates' k-th
perturbed value, drawn exactly by thinning. The value and index of every draw
have exactly the dense estimator's distribution (see
:func:`kth_largest_perturbed_sparse`, Notes), at a cost of O(m) draws per row and
draw plus the expected number of such columns.

:func:`sample_sparse_or_none` makes the choice between the two paths for one
call, with the cost rule of :func:`choose_sampler`. The rule's constants are
measured on CPU; on CUDA, "auto" keeps the dense path (the fused kernel) until
GPU constants are measured, and the sparse path runs when forced.
"""

import math

import torch

#: Accepted values of the ``sampler`` parameter.
SAMPLERS = ("auto", "dense", "sparse")

# Cost model of the "auto" rule, in nanoseconds per unit on one CPU thread,
# fitted to timings of both paths on trained and cosine scores at N = 256 and
# 1024 on the (loaded, 2-core) benchmark machine; only their ratios matter. The
# fixed cost is large: the sparse path runs ~200 small torch operations.
_COST_DENSE = 5.0  # one Gaussian draw + its share of topk, per (row, column, draw)
_COST_DENSE_ROW = 2000.0  # per (row, draw): topk's per-row overhead
_COST_POOL_TOPK = 15.0  # candidate pool by one topk over the row, per score
_COST_POOL_GROUPS = 2.5  # candidate pool through group maxima, per score
_COST_POOL_ROW = 2000.0  # per row and topk of the pool (groups: two topk)
_COST_CANDIDATE_MIN = 3.0  # per (row, draw, candidate) when m == k (a min)
_COST_CANDIDATE_TOPK = 5.0  # per (row, draw, candidate) when m > k (a topk over m)
_COST_CANDIDATE_ROW = 1000.0  # per (row, draw) when m > k
_COST_PROPOSAL = 75.0  # per proposed column: thinning, truncated draw, merge
_COST_FIXED = 8.0e6  # per call: pool, cost estimate and ~200 small operations
# The sparse path must be estimated this much cheaper to be taken: the model's
# errors are of this order (benchmarks/RESULTS.md, section 1).
_MARGIN = 0.8
# Candidate counts tried, as multiples of k, and the rows used to estimate the cost.
_MENU = (1, 2, 4, 8, 16, 32)
_ESTIMATE_ROWS = 32
_LOG_Q_FLOOR = -700.0  # q below exp(-700) ~ 1e-304: no proposal can happen in float64
_TINY = torch.finfo(torch.float64).tiny


def check_sampler(sampler, noise="independent"):
    """Raise unless ``sampler`` is one of :data:`SAMPLERS` and fits ``noise``."""
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
    # maxima; worth it when the maxima still number 4 * size or more.
    b = min(64, n_columns // (4 * size))
    return b if b >= 4 else 1


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
    for _ in range(12):  # a 16 eps bracket to eps / 256: plenty for a cost estimate
        mid = 0.5 * (low + high)
        mass = torch.special.ndtr((s - mid.unsqueeze(2)) / epsilon) * inside
        above = mass.sum(2) > k - 0.5
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return 0.5 * (low + high)


def _pool_cost(n_rows, n_columns, pool_size):
    grouped = _group_size(n_columns, pool_size) > 1
    per_score = _COST_POOL_GROUPS if grouped else _COST_POOL_TOPK
    per_row = _COST_POOL_ROW * (2 if grouped else 1)
    return n_rows * (per_score * n_columns + per_row) + _COST_FIXED


def _sparse_costs(top_values, k, epsilon, n_perturbations, n_columns, n_rows):
    """Estimated cost (ns) of the sparse path for each candidate count the pool covers."""
    pool_size = top_values.shape[1]
    pool = _pool_cost(n_rows, n_columns, pool_size)
    # A fixed, evenly spread subset of rows is enough to estimate a mean.
    step = max(1, top_values.shape[0] // _ESTIMATE_ROWS)
    top = top_values[::step].double()
    pairs = n_rows * n_perturbations
    sizes = [k * factor for factor in _MENU
             if k * factor < min(n_columns, pool_size)]
    if not sizes:
        return {}
    u = _expected_kth(top, k, epsilon, sizes)
    costs = {}
    for i, m in enumerate(sizes):
        q = _log_tail((u[:, i] - top[:, m]) / epsilon).exp()
        proposals = pairs * (n_columns - m) * float(q.mean())
        if m == k:
            candidates = _COST_CANDIDATE_MIN * pairs * m
        else:
            candidates = pairs * (_COST_CANDIDATE_TOPK * m + _COST_CANDIDATE_ROW)
        costs[m] = pool + candidates + _COST_PROPOSAL * proposals
    return costs


def proposal_cap(n_rows, n_columns):
    """Expected proposals handled at once: their temporaries (~60-100 bytes each)
    then stay under the size of the (float32) scores."""
    return n_rows * n_columns / 32


def pool_size_for(k, n_columns, largest=_MENU[-1]):
    """Size of the candidate pool: the largest candidate count tried, plus one."""
    return min(n_columns, k * largest + 1, max(k + 1, n_columns // 2))


def _dense_cost(n_rows, n_columns, n_perturbations):
    return n_rows * n_perturbations * (_COST_DENSE * n_columns + _COST_DENSE_ROW)


def choose_sampler(top_values, k, epsilon, n_perturbations, n_columns):
    """The cheaper path for one call: ("sparse", m) or ("dense", None).

    The rule: with the row's sorted top scores ``s_(1) >= s_(2) >= ...`` and a
    candidate count ``m`` from ``k * (1, 2, 4, 8, 16, 32)`` (below C / 2), the
    expected number of proposals per draw is estimated as
    ``(C - m) * Q((u_m - s_(m+1)) / eps)``, where ``u_m`` solves
    ``sum_{j <= m} Q((u_m - s_(j)) / eps) = k - 1/2`` (a deterministic stand-in
    for the candidates' k-th perturbed value), averaged over 32 evenly spaced
    rows. The sparse cost is a pass over the scores, ``N B m`` candidate draws
    and the proposals, each weighted by a per-unit cost measured on CPU; the
    dense cost is ``N C B`` draws plus topk's per-row overhead. The sparse
    path is taken when its best estimate is below 0.8 times the dense one.
    Once the candidates are drawn, the sparse path still hands over to the
    dense one if the actual expected number of proposals exceeds the dense
    cost (see :func:`sample_sparse_or_none`).

    Parameters
    ----------
    top_values : torch.Tensor of shape (N, M + 1) or (N, C)
        Sorted top scores of each row, M the largest candidate count tried.
    k, epsilon, n_perturbations, n_columns
        The call's parameters.

    Returns
    -------
    (str, int or None)
    """
    dense = _dense_cost(top_values.shape[0], n_columns, n_perturbations)
    costs = _sparse_costs(top_values, k, epsilon, n_perturbations, n_columns,
                          top_values.shape[0])
    if not costs:
        return "dense", None
    m = min(costs, key=costs.get)
    return ("sparse", m) if costs[m] < _MARGIN * dense else ("dense", None)


def _geometric_proposals(log_q, log_1mq, n_columns, generator):
    """Columns proposed with probability q each, independently, for every pair.

    Gaps between successive proposed columns are Geometric(q): drawn in blocks
    of L per pair still short of the last column, L doubling at each round, so
    the number of rounds is logarithmic in the largest count.

    Returns
    -------
    pairs, columns : torch.Tensor of shape (P,), int64
    """
    device = log_q.device
    active = torch.nonzero(log_q > _LOG_Q_FLOOR).squeeze(1)
    if active.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    position = torch.full((active.numel(),), -1.0, dtype=torch.float64, device=device)
    mean_count = float(log_q[active].exp().mean()) * n_columns
    length = int(min(n_columns, math.ceil(1.5 * mean_count + 4.0 * math.sqrt(mean_count) + 4)))
    pairs_out, columns_out = [], []
    while active.numel() > 0:
        uniform = torch.rand((active.numel(), length), dtype=torch.float64, device=device,
                             generator=generator)
        # 1 - U lies in (0, 1]; log1p(-q) = log(1 - q) exactly from the other tail.
        gaps = torch.floor(torch.log1p(-uniform) / log_1mq[active].unsqueeze(1)) + 1.0
        cumulative = position.unsqueeze(1) + torch.cumsum(gaps, dim=1)
        inside = cumulative < n_columns
        rows, slots = torch.nonzero(inside, as_tuple=True)
        pairs_out.append(active[rows])
        columns_out.append(cumulative[rows, slots].long())
        position = cumulative[:, -1]
        still = position < n_columns
        active, position = active[still], position[still]
        length = min(2 * length, n_columns)
    return torch.cat(pairs_out), torch.cat(columns_out)


def kth_largest_perturbed_sparse(x, k, epsilon, n_perturbations, generator=None, m=None,
                                 top=None, max_proposals=None):
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
        ``candidate_pool(x, min(m + 1, C))`` if already computed.
    max_proposals : float, optional
        If the expected number of proposals (known once the candidates are
        drawn) exceeds it, return None: the caller then takes the dense path.

    Returns
    -------
    values : torch.Tensor of shape (N,)
    indices : torch.Tensor of shape (N, B), int64

    Notes
    -----
    Let A be the m highest-scoring columns of a row (ties broken arbitrarily),
    ``s_T`` the highest score outside A, and for one draw ``P_a = s_a + eps Z_a``
    (a in A), ``u`` the k-th largest ``P_a``. The other columns' perturbed values
    ``X_i = s_i + eps Z_i`` are independent of the ``P_a``. Given u:

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
       is uniform on (0, p_i), which is the truncated Gaussian of 2. Since
       ``s_i <= s_T``, ``p_i <= q = Q((u - s_T) / eps)``, so only the columns
       with ``t_i < q`` can matter: each column is one independently with
       probability q, so they are proposed with Geometric(q) gaps between
       successive columns (candidates are proposed too, then dropped), and a
       proposed column draws ``t_i = q V``, V uniform on (0, 1], and is kept
       iff its ``X_i > u``. This is the thinning of the dense estimator's own
       draws: E and the values on it have their exact joint law.

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
    if top is None:
        top = candidate_pool(x, min(m + 1, n_columns))
    top_values, top_columns = top
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
    else:
        top_k = torch.topk(perturbed, k, dim=2, sorted=True)
        kth, where = top_k.values[:, :, k - 1], top_k.indices[:, :, k - 1]
    values = kth.double()
    indices = candidate_columns.gather(1, where)

    if m < n_columns:
        u = values.reshape(-1)
        s_top = top_values[:, m].double().repeat_interleave(n_draws)
        log_q = _log_tail((u - s_top) / epsilon)
        expected = log_q.exp() * (n_columns - m)  # proposals per pair, in expectation
        total = float(expected.sum())
        if max_proposals is not None and total > max_proposals:
            return None
        log_1mq = torch.special.log_ndtr((u - s_top) / epsilon)
        # Pairs in blocks of about proposal_cap expected proposals each, so that the
        # proposals' temporaries stay below the size of the scores.
        budget = max(proposal_cap(n_rows, n_columns), 65536.0)  # a few MB at least
        n_blocks = max(1, math.ceil(total / budget))
        cuts = torch.searchsorted(torch.cumsum(expected, 0),
                                  budget * torch.arange(1, n_blocks, dtype=expected.dtype,
                                                        device=device))
        starts = [0] + cuts.tolist()
        ends = cuts.tolist() + [u.numel()]
        kept = [_accepted_proposals(x, u, s_top, log_q, log_1mq, candidate_columns, n_draws,
                                    epsilon, generator, start, end)
                for start, end in zip(starts, ends, strict=True) if end > start]
        kept = [part for part in kept if part is not None]
        if kept:
            pairs, columns, drawn = (torch.cat(parts) for parts in zip(*kept, strict=True))
            _merge_accepted(k, values, indices, perturbed, candidate_columns, pairs, columns,
                            drawn)
    return values.mean(dim=1).to(x.dtype), indices


def _accepted_proposals(x, u, s_top, log_q, log_1mq, candidate_columns, n_draws, epsilon,
                        generator, start, end):
    """Proposals of the pairs ``start:end`` kept above u: (pairs, columns, values) or None."""
    device = x.device
    n_columns = x.shape[1]
    pairs, columns = _geometric_proposals(log_q[start:end], log_1mq[start:end], n_columns,
                                          generator)
    pairs = pairs + start
    rows = torch.div(pairs, n_draws, rounding_mode="floor")
    scores = x[rows, columns].double()
    # A proposed column is perturbed as s - eps * ndtri(t), t its tail mass,
    # uniform on (0, q]: it lands above u with probability p / q, and then
    # follows its Gaussian truncated to (u, inf) (Notes, 3).
    uniform = torch.rand(pairs.shape, dtype=torch.float64, device=device, generator=generator)
    tail_mass = (torch.log1p(-uniform) + log_q[pairs]).exp().clamp_min(_TINY)
    drawn = scores - epsilon * torch.special.ndtri(tail_mass)
    # Candidates are proposed too and dropped: a score above s_T is one, a
    # score tied with s_T is looked up.
    s_pair = s_top[pairs]
    accepted = (drawn > u[pairs]) & (scores <= s_pair)
    tied = accepted & (scores == s_pair)
    if bool(tied.any()):
        where = torch.nonzero(tied).squeeze(1)
        is_candidate = (candidate_columns[rows[where]] == columns[where].unsqueeze(1)).any(1)
        accepted[where[is_candidate]] = False
    if not bool(accepted.any()):
        return None
    return pairs[accepted], columns[accepted], drawn[accepted]


def _merge_accepted(k, values, indices, perturbed, candidate_columns, pairs, columns, drawn):
    """Redo the k-th largest of the pairs that have accepted columns above u."""
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

    m = perturbed.shape[2]
    pool_values = torch.cat([perturbed.reshape(-1, m)[affected].double(), extra_values], dim=1)
    rows = torch.div(affected, n_draws, rounding_mode="floor")
    pool_columns = torch.cat([candidate_columns[rows], extra_columns], dim=1)
    top_k = torch.topk(pool_values, k, dim=1, sorted=True)
    values.view(-1)[affected] = top_k.values[:, k - 1]
    indices.view(-1)[affected] = pool_columns.gather(1, top_k.indices[:, k - 1:]).squeeze(1)


def dense_cost_in_proposals(n_rows, n_columns, n_perturbations):
    """The dense path's cost expressed as a number of proposals (the fallback threshold)."""
    return _dense_cost(n_rows, n_columns, n_perturbations) / _COST_PROPOSAL


def sample_sparse_or_none(x, k, epsilon, n_perturbations, generator, sampler):
    """The sparse result, or None when ``sampler="auto"`` finds the dense path cheaper.

    The candidate pool is found in two stages: the 4k + 1 highest scores first
    (cheap), and the 32k + 1 highest only when no candidate count up to 4k is
    clearly cheaper than the dense path (half its cost) and the larger pool
    with 8k candidates would cost under half the dense path. Under
    ``sampler="auto"`` nothing is computed when the small pool with k
    candidates would already cost a third of the dense path.
    """
    n_rows, n_columns = x.shape
    if sampler == "auto" and x.device.type != "cpu":
        return None  # the cost constants are CPU ones (module docstring)
    dense = _dense_cost(n_rows, n_columns, n_perturbations)
    small_size, big_size = pool_size_for(k, n_columns, largest=4), pool_size_for(k, n_columns)
    pairs = n_rows * n_perturbations
    if sampler == "auto":
        # Nothing computed yet: give up at once unless the cheapest sparse call
        # (the pool and k candidates, no proposal) would cost under a third of
        # the dense one; otherwise the decision itself would cost the dense calls.
        floor = _pool_cost(n_rows, n_columns, small_size) + _COST_CANDIDATE_MIN * pairs * k
        if big_size <= k + 1 or floor >= dense / 3:
            return None
    top = candidate_pool(x, small_size)
    costs = _sparse_costs(top[0], k, epsilon, n_perturbations, n_columns, n_rows)
    big_floor = (_pool_cost(n_rows, n_columns, big_size)
                 + pairs * (_COST_CANDIDATE_TOPK * 8 * k + _COST_CANDIDATE_ROW))
    if (big_size > small_size and min(costs.values(), default=math.inf) > dense / 2
            and (sampler == "sparse" or big_floor < dense / 2)):
        big = candidate_pool(x, big_size)
        big_costs = _sparse_costs(big[0], k, epsilon, n_perturbations, n_columns, n_rows)
        if min(big_costs.values(), default=math.inf) < min(costs.values(), default=math.inf):
            top, costs = big, big_costs
    if sampler == "sparse":
        # With C <= k + 1 the menu may be empty: every column is then a candidate.
        m = min(costs, key=costs.get) if costs else n_columns
        if m == n_columns and top[0].shape[1] < n_columns:
            top = candidate_pool(x, n_columns)
        return kth_largest_perturbed_sparse(x, k, epsilon, n_perturbations, generator, m=m,
                                            top=top)
    if not costs:
        return None
    m = min(costs, key=costs.get)
    if costs[m] >= _MARGIN * dense:
        return None
    return kth_largest_perturbed_sparse(
        x, k, epsilon, n_perturbations, generator, m=m, top=top,
        max_proposals=dense_cost_in_proposals(n_rows, n_columns, n_perturbations))
