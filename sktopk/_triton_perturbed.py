"""Fused Triton kernel for the Monte-Carlo k-th largest value of ``x + epsilon * Z``.

One pass over the scores computes, for every row ``i`` and draw ``b``, the k-th
largest entry of ``x[i] + epsilon * Z[b, i]`` and its column, with the Gaussian
noise generated in registers and never written to memory.

Design
------
Mapping
    A program owns ``LANES // B`` whole rows and all their draws: its ``LANES``
    lanes are the (row, draw) pairs, draw fastest (``launch_config`` picks
    ``LANES`` so that few lanes idle: 32 for B = 10, 16 for B = 5). The program
    walks the columns in tiles of ``BLOCK``, each handled as four
    (LANES, BLOCK / 4) quarters (quarter j holds the columns 4 g + j, the j-th
    output of one Philox call), and keeps per lane a running top-k list of
    ``K_PAD`` 64-bit keys in registers. The lanes of a row load the same
    scores (L1 hits), so the scores are read from memory about once; the mean
    over the draws is taken in the program, in draw order, without atomics.
Memory
    Nothing of size (N, C, B), nor (N, C): the outputs, (N,) values and (N, B)
    int64 indices, and an 8-byte seed are all the kernel allocates.
Running top-k
    The hot loop per tile is: Philox + Box-Muller, ``fma``, and ONE whole-tile
    reduction that says whether any lane holds a value above its current k-th
    (``v > threshold``, float32). Only then (always for the tiles before column
    k) does the program count each lane's candidates and run
    ``min(k, most candidates in a lane)`` insertion steps, each moving every
    lane's largest remaining candidate into the slot of its list's minimum if
    it beats it. A lane inserts about ``k * log(C / k)`` times over a row, but
    the steps are shared by the program's lanes, so with 32 lanes most tiles of
    a C = 10000 row take a step or two: about as much work again as the noise
    (see ``benchmarks/gpu_check.py``'s sweep for the tile shapes).
Keys and ties
    A key is ``(order-preserving int32 image of the float32 value) << 32 |
    (2**32 - 1 - column)``: one int64 comparison orders by value, then by
    column, and the keys of one lane are all distinct. Ties between equal
    perturbed values are therefore broken towards the LOWER column index (a
    later equal value never passes ``v > threshold`` either); -0.0 is keyed as
    +0.0, so it ties with it (and a k-th value of -0.0 comes back as +0.0).
    ``torch.topk`` documents no tie rule, so indices can
    differ from the torch path only in a tie: probability zero with float32
    noise, but not rare for float16/bfloat16 scores, whose perturbed values are
    rounded to the input dtype as the torch path rounds them. The k-th VALUE
    is the same either way.
Noise
    ``Z[b, i, c]`` is normal ``c % 4`` from Philox4x32-10 (``tl.philox``) at
    counter ``(c // 4, i, b, tag)`` with the 64-bit key drawn from the caller's
    torch generator; each pair of 32-bit outputs becomes two normals by
    Box-Muller (uniforms with 2**-31 resolution, so |Z| <= 5.7). ``tag`` is 0
    for independent noise and 1 for shared noise, where ``i`` is 0 for every
    row. The noise of a (row, draw) thus depends only on the seed and on
    (b, i, c): not on the launch configuration, nor on the number of rows. On
    NVIDIA GPUs the log/sin/cos are the MUFU approximations (absolute error
    about 1e-6; libdevice's precise sinf/cosf spill a Payne-Hanek slow path to
    local memory), under the interpreter the precise ones: the same seed gives
    the same noise on the same kind of device, not bitwise across the two.
Seed
    ``torch.randint(0, 2**62, (1,), generator=generator, device=x.device)``:
    a device tensor read by the kernel, so there is no host synchronisation and
    the call can be captured in a CUDA graph. It consumes the generator
    differently from the torch path: the two paths draw different noise from
    the same seeded generator (same distribution).
Precision
    Arithmetic is float32: ``fma(z, epsilon, x)``, one rounding, as torch's
    ``add(x, z, alpha=epsilon)`` does for float32 on CPU and CUDA; for
    float16/bfloat16 inputs the result is rounded to the input dtype (nearest
    even), as the torch path, which adds in that dtype, does on CUDA (torch on
    CPU rounds alpha, or the product, to the half dtype first, so there the two
    paths can differ by an ulp). The draws are summed in float32 in the order
    b = 0, 1, ... and divided as the torch path does on that device (a true
    division on CPU, a multiplication by the float32 reciprocal of B on CUDA).
    So, with the same explicit noise, float32 values and indices are bitwise
    those of :func:`sktopk._perturbed.kth_largest_perturbed_torch`, ties aside.

The module imports without Triton (``AVAILABLE`` is then False and nothing here
can run). What the kernel accepts is decided here, by :func:`supports`; the
kernel raises on anything else, and ``sktopk._triton_dispatch`` asks
:func:`supports` before choosing it. This module imports nothing from the rest
of sktopk.
"""

import contextlib
import os

import numpy as np
import torch

try:  # Triton is optional: without it sktopk uses its torch path.
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except Exception:  # ImportError, or a broken install raising something else
    triton = None
    tl = None

AVAILABLE = triton is not None

#: Largest k the kernel handles; beyond, the running list gets too long for registers.
MAX_K = 64
#: Largest number of draws: all the draws of a row live in one program (and
#: B * next_pow2(k) <= 16384: the running lists must fit in registers).
MAX_DRAWS = 1024
#: Score dtypes the kernel reads.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Noise modes the kernel generates.
SUPPORTED_NOISE = ("independent", "shared")
# Elements of one (lanes x columns) tile: 16 per thread at 4 warps, about 110
# registers on sm_90 (4096 needed about 200, halving the resident warps).
_TILE_ELEMENTS = 2048

if AVAILABLE:
    # Unfilled slots of a running list: keys below every real one (even -inf's),
    # distinct so that "the slot holding the minimum" is unique.
    _KEY_EMPTY = tl.constexpr(-(2**63) + 1)
    # Padding slots beyond k (the list has next_pow2(k) slots): never the minimum.
    _KEY_PAD = tl.constexpr(2**63 - 1)
    _LOW_MASK = tl.constexpr(2**32 - 1)
    _NO_COLUMN = tl.constexpr(2**31 - 1)

    @triton.jit
    def _box_muller(u1, u2, FAST_MATH: tl.constexpr):
        """Two independent standard normals from two uniforms on [0, 1)."""
        u1 = tl.maximum(u1, 1.0e-7)  # log(0); truncates the normal at 5.7 sigma
        angle = 6.283185307179586 * u2
        if FAST_MATH:
            # MUFU approximations (abs. error ~1e-6): libdevice's precise sinf/cosf
            # carry a Payne-Hanek slow path that spills to local memory.
            radius = tl.sqrt(-2.0 * libdevice.fast_logf(u1))
            cos = libdevice.fast_cosf(angle)
            sin = libdevice.fast_sinf(angle)
        else:
            radius = tl.sqrt(-2.0 * tl.log(u1))
            cos = tl.cos(angle)
            sin = tl.sin(angle)
        return radius * cos, radius * sin

    @triton.jit
    def _gaussian_quads(seed, stream_row, stream_draw, stream_tag, groups,
                        FAST_MATH: tl.constexpr):
        """The four standard normals of each (lane, column group), shape (LANES, G) each.

        ``stream_row`` and ``stream_draw`` are (LANES,), ``groups`` is (1, G).

        Column ``4 g + j`` of a lane's stream is output ``j`` of Philox4x32-10 at
        counter ``(g, stream_row, stream_draw, stream_tag)``.
        """
        zero = tl.zeros((stream_row.shape[0], groups.shape[1]), dtype=tl.uint32)
        c0 = zero + groups.to(tl.uint32)
        c1 = zero + stream_row.to(tl.uint32)[:, None]
        c2 = zero + stream_draw.to(tl.uint32)[:, None]
        c3 = zero + stream_tag
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
        n0, n1 = _box_muller(tl.uint_to_uniform_float(r0), tl.uint_to_uniform_float(r1),
                             FAST_MATH)
        n2, n3 = _box_muller(tl.uint_to_uniform_float(r2), tl.uint_to_uniform_float(r3),
                             FAST_MATH)
        return n0, n1, n2, n3

    @triton.jit
    def _round_to(v, dtype: tl.constexpr):
        """float32 ``v`` rounded to nearest-even in ``dtype`` (float16/bfloat16), as float32."""
        if dtype == tl.bfloat16:
            # By hand: the interpreter's float32 -> bfloat16 cast truncates.
            bits = v.to(tl.int32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
            rounded = bits.to(tl.float32, bitcast=True)
        else:
            rounded = v.to(dtype).to(tl.float32)
        return rounded

    @triton.jit
    def _perturb_quarter(x_rows, z_rows, noise, cols, valid, stride_xc, stride_zc, epsilon,
                         EXPLICIT_NOISE: tl.constexpr, ROUND_TO_INPUT: tl.constexpr):
        """``x + epsilon * z`` on the (1, G) columns ``cols``, -inf where masked.

        ``x_rows`` and ``z_rows`` are (LANES, 1) row pointers.
        """
        x = tl.load(x_rows + cols * stride_xc, mask=valid, other=0.0)
        if EXPLICIT_NOISE:
            noise = tl.load(z_rows + cols * stride_zc, mask=valid, other=0.0)
        # One rounding, like torch.add(x, z, alpha=epsilon) on CPU and CUDA.
        v = tl.fma(noise.to(tl.float32), epsilon, x.to(tl.float32))
        if ROUND_TO_INPUT:
            v = _round_to(v, x.dtype)  # the torch path adds in the input dtype
        return tl.where(valid, v, float("-inf"))

    @triton.jit
    def _encode_keys(value, column):
        """int64 keys ordering by value, then lower column first."""
        bits = value.to(tl.int32, bitcast=True)
        # Flip the magnitude bits of negative floats: signed int order = float order.
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        return (ordered.to(tl.int64) << 32) + (_LOW_MASK - column.to(tl.int64))

    @triton.jit
    def _decode_value(keys):
        high = (keys >> 32).to(tl.int32)
        bits = high ^ ((high >> 31) & 0x7FFFFFFF)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _decode_column(keys):
        return _LOW_MASK - (keys & _LOW_MASK)

    @triton.jit
    def _best_candidate(w0, w1, w2, w3, c0, c1, c2, c3):
        """Per lane: the largest remaining value, its lowest column among equals, its key."""
        best = tl.max(tl.maximum(tl.maximum(w0, w1), tl.maximum(w2, w3)), axis=1)
        at = best[:, None]
        col = tl.minimum(
            tl.minimum(tl.min(tl.where(w0 == at, c0, _NO_COLUMN), axis=1),
                       tl.min(tl.where(w1 == at, c1, _NO_COLUMN), axis=1)),
            tl.minimum(tl.min(tl.where(w2 == at, c2, _NO_COLUMN), axis=1),
                       tl.min(tl.where(w3 == at, c3, _NO_COLUMN), axis=1)))
        # -0.0 == +0.0: key them alike so that equal values order by column only.
        key = _encode_keys(tl.where(best == 0.0, 0.0, best), col)
        return best, col, key

    @triton.jit
    def _insert_candidates(v0, v1, v2, v3, c0, c1, c2, c3, ok0, ok1, ok2, ok3, top, threshold,
                           forced, K: tl.constexpr):
        """Merge a tile (four (LANES, G) quarters of values, (1, G) columns) into the top-k.

        Each step moves, in every lane whose largest remaining value beats its
        current k-th (by key: value, then lower column), that value's key into
        the slot of the list's minimum. The candidates of a lane are the values
        above its k-th (``threshold``, float32), taken in decreasing order: once
        one fails, all later ones do, and at most K succeed, so min(K, most
        candidates in a lane) steps suffice (K when ``forced``: the lists are not
        full yet). The step count is reduced across lanes once, so the steps
        themselves need no block-wide synchronisation. Work over the tile is in
        float32 and int32; int64 only per lane.
        """
        # -inf marks masked and already taken entries: real values are kept
        # finite from below (an overflow to -inf becomes -FLT_MAX).
        w0 = tl.where(ok0, tl.maximum(v0, -3.4028234663852886e38), float("-inf"))
        w1 = tl.where(ok1, tl.maximum(v1, -3.4028234663852886e38), float("-inf"))
        w2 = tl.where(ok2, tl.maximum(v2, -3.4028234663852886e38), float("-inf"))
        w3 = tl.where(ok3, tl.maximum(v3, -3.4028234663852886e38), float("-inf"))
        t = threshold[:, None]
        above = (tl.sum((w0 > t).to(tl.int32), axis=1) + tl.sum((w1 > t).to(tl.int32), axis=1)
                 + tl.sum((w2 > t).to(tl.int32), axis=1) + tl.sum((w3 > t).to(tl.int32), axis=1))
        n_steps = tl.where(forced, K, tl.minimum(tl.max(above, axis=0), K))
        for _ in range(0, n_steps):
            kth_key = tl.min(top, axis=1)
            best, col, key = _best_candidate(w0, w1, w2, w3, c0, c1, c2, c3)
            better = (best > float("-inf")) & (key > kth_key)
            top = tl.where((top == kth_key[:, None]) & better[:, None], key[:, None], top)
            taken = col[:, None]
            w0 = tl.where(c0 == taken, float("-inf"), w0)
            w1 = tl.where(c1 == taken, float("-inf"), w1)
            w2 = tl.where(c2 == taken, float("-inf"), w2)
            w3 = tl.where(c3 == taken, float("-inf"), w3)
        return top

    @triton.jit
    def _kth_perturbed_kernel(
        x_ptr, noise_ptr, seed_ptr, values_ptr, indices_ptr,
        n_rows, n_cols, n_draws, rows_per_program,
        stride_xn, stride_xc, stride_zb, stride_zn, stride_zc,
        epsilon, draws_f, inv_draws,
        K: tl.constexpr, K_PAD: tl.constexpr, LANES: tl.constexpr, BLOCK: tl.constexpr,
        ROWS_PAD: tl.constexpr, SHARED: tl.constexpr, EXPLICIT_NOISE: tl.constexpr,
        ROUND_TO_INPUT: tl.constexpr, MEAN_BY_RECIPROCAL: tl.constexpr,
        FAST_MATH: tl.constexpr,
    ):
        """k-th largest of ``x[i] + epsilon * Z[b, i]`` for this program's (row, draw) lanes.

        Writes ``indices[i, b]`` (int64 column) and ``values[i]`` (mean over b).
        ``EXPLICIT_NOISE`` reads Z from ``noise_ptr`` (shape (B, N or 1, C)) instead
        of generating it: the testing hook against the torch path.

        A tile of BLOCK columns is handled as four (LANES, BLOCK // 4) quarters,
        quarter j holding the columns 4 g + j: Philox yields four numbers per
        counter, and keeping them apart avoids an interleave (a shared-memory
        layout conversion in the compiled kernel).
        """
        pid = tl.program_id(0)
        lane = tl.arange(0, LANES)
        row_in_program = lane // n_draws
        draw = lane % n_draws
        row = pid * rows_per_program + row_in_program
        lane_ok = (row_in_program < rows_per_program) & (row < n_rows)
        x_rows = x_ptr + row.to(tl.int64) * stride_xn
        if SHARED:
            stream_row = row * 0
            stream_tag = 1
        else:
            stream_row = row
            stream_tag = 0
        z_rows = noise_ptr + draw.to(tl.int64) * stride_zb + stream_row.to(tl.int64) * stride_zn
        if EXPLICIT_NOISE:
            seed = 0
        else:
            seed = tl.load(seed_ptr)

        slot = tl.arange(0, K_PAD)
        empty = tl.where(slot < K, _KEY_EMPTY + slot.to(tl.int64), _KEY_PAD)
        top = tl.zeros((LANES, K_PAD), dtype=tl.int64) + empty[None, :]
        # float32 value of each lane's current k-th key (meaningless until k seen).
        threshold = tl.full((LANES,), float("-inf"), dtype=tl.float32)

        # Build the column tensors 2-D from the start: expanding 1-D ones inside
        # the loop made the compiler convert layouts (a barrier each) every tile.
        quad = tl.arange(0, BLOCK // 4)[None, :]
        ok_lane = lane_ok[:, None]
        x_rows = x_rows[:, None]
        z_rows = z_rows[:, None]
        for start in range(0, n_cols, BLOCK):
            groups = start // 4 + quad
            c0 = groups * 4
            c1 = c0 + 1
            c2 = c0 + 2
            c3 = c0 + 3
            ok0 = ok_lane & (c0 < n_cols)
            ok1 = ok_lane & (c1 < n_cols)
            ok2 = ok_lane & (c2 < n_cols)
            ok3 = ok_lane & (c3 < n_cols)
            if EXPLICIT_NOISE:
                n0 = 0.0
                n1 = 0.0
                n2 = 0.0
                n3 = 0.0
            else:
                n0, n1, n2, n3 = _gaussian_quads(seed, stream_row, draw, stream_tag, groups,
                                                 FAST_MATH)
            v0 = _perturb_quarter(x_rows, z_rows, n0, c0, ok0, stride_xc, stride_zc, epsilon,
                                  EXPLICIT_NOISE, ROUND_TO_INPUT)
            v1 = _perturb_quarter(x_rows, z_rows, n1, c1, ok1, stride_xc, stride_zc, epsilon,
                                  EXPLICIT_NOISE, ROUND_TO_INPUT)
            v2 = _perturb_quarter(x_rows, z_rows, n2, c2, ok2, stride_xc, stride_zc, epsilon,
                                  EXPLICIT_NOISE, ROUND_TO_INPUT)
            v3 = _perturb_quarter(x_rows, z_rows, n3, c3, ok3, stride_xc, stride_zc, epsilon,
                                  EXPLICIT_NOISE, ROUND_TO_INPUT)
            # Hot path: one whole-tile reduction (in-thread, then one shuffle tree)
            # says whether any lane holds a value above its k-th so far. Equal
            # values never enter (earlier columns win ties). The tiles before
            # column k always insert, so every lane holds k keys after them.
            t = threshold[:, None]
            above = tl.maximum(tl.maximum(v0, v1), tl.maximum(v2, v3)) > t
            forced = start < K
            if (tl.max(above.to(tl.int32)) > 0) | forced:
                top = _insert_candidates(v0, v1, v2, v3, c0, c1, c2, c3, ok0, ok1, ok2, ok3,
                                         top, threshold, forced, K)
                threshold = _decode_value(tl.min(top, axis=1))

        kth_key = tl.min(top, axis=1)
        kth_value = _decode_value(kth_key)
        kth_column = _decode_column(kth_key)
        tl.store(indices_ptr + row.to(tl.int64) * n_draws + draw, kth_column, mask=lane_ok)

        # Mean over draws, summed in draw order like the torch path: each step adds
        # exactly one lane's value (the masked sum of one value and zeros is exact).
        lanes_2d = tl.arange(0, LANES)[None, :]
        lane_row_2d = lanes_2d // n_draws
        lane_draw_2d = lanes_2d % n_draws
        local = tl.arange(0, ROWS_PAD)
        kth_2d = tl.where(lane_row_2d == local[:, None], kth_value[None, :], 0.0)
        total = tl.zeros((ROWS_PAD,), dtype=tl.float32)
        for b in range(0, n_draws):
            total += tl.sum(tl.where(lane_draw_2d == b, kth_2d, 0.0), axis=1)
        if MEAN_BY_RECIPROCAL:
            mean = total * inv_draws  # torch on CUDA divides by a scalar this way
        else:
            mean = tl.math.div_rn(total, draws_f)
        out_rows = pid * rows_per_program + local
        out_ok = (local < rows_per_program) & (out_rows < n_rows)
        if ROUND_TO_INPUT:
            mean = _round_to(mean, values_ptr.dtype.element_ty)
        tl.store(values_ptr + out_rows, mean.to(values_ptr.dtype.element_ty), mask=out_ok)

    @triton.jit
    def _gaussian_dump_kernel(seed_ptr, out_ptr, n_stream_rows, n_cols, stream_tag,
                              BLOCK: tl.constexpr, FAST_MATH: tl.constexpr):
        """Write the kernel's noise Z[b, i, :] for program (b * n_stream_rows + i): tests only."""
        pid = tl.program_id(0)
        draw = pid // n_stream_rows
        row = pid % n_stream_rows
        seed = tl.load(seed_ptr)
        one = tl.zeros((1,), dtype=tl.int32)
        out_row = out_ptr + pid.to(tl.int64) * n_cols
        for start in range(0, n_cols, BLOCK):
            groups = start // 4 + tl.arange(0, BLOCK // 4)[None, :]
            n0, n1, n2, n3 = _gaussian_quads(seed, one + row, one + draw, stream_tag, groups,
                                             FAST_MATH)
            cols = groups * 4
            tl.store(out_row + cols, n0, mask=cols < n_cols)
            tl.store(out_row + cols + 1, n1, mask=cols + 1 < n_cols)
            tl.store(out_row + cols + 2, n2, mask=cols + 2 < n_cols)
            tl.store(out_row + cols + 3, n3, mask=cols + 3 < n_cols)


def _next_power_of_2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def launch_config(n_cols, n_draws, k=8):
    """Choose ``(lanes, block, num_warps)`` for a call; results do not depend on it.

    Lanes are (row, draw) pairs of whole rows: prefer the smallest power of two
    >= 16 that wastes under 10% of its lanes (16 for B = 5, 32 for B = 10), and
    let a tile hold about ``_TILE_ELEMENTS`` values. More warps only when the
    running lists (lanes x next_pow2(k) int64) would crowd the registers.
    """
    lanes = max(16, _next_power_of_2(n_draws))
    while lanes < 64 and (lanes // n_draws) * n_draws < 0.9 * lanes:
        lanes *= 2
    block = max(4, min(_next_power_of_2(n_cols), _TILE_ELEMENTS // lanes))
    # Few columns: widen to more rows per program rather than idle columns.
    lanes = max(lanes, _TILE_ELEMENTS // block)
    list_slots = lanes * max(2, _next_power_of_2(k))
    num_warps = min(16, max(4, _next_power_of_2(list_slots // 1024)))
    return lanes, block, num_warps


def _interpreting():
    # Triton's own switch: kernels then run on CPU tensors through numpy.
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unsupported_reason(x, k, epsilon, n_perturbations, noise):
    """Why the kernel cannot take this call, or None when it can.

    Parameters
    ----------
    x : torch.Tensor
        The scores.
    k, epsilon, n_perturbations, noise
        As in :func:`kth_largest_perturbed_triton`.

    Returns
    -------
    str or None
    """
    if not AVAILABLE:
        return "Triton is not installed"
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        return "x must be a 2-D tensor"
    if x.dtype not in SUPPORTED_DTYPES:
        return f"x has dtype {x.dtype}; the kernel reads float32, float16 and bfloat16"
    if not (x.is_cuda or (x.device.type == "cpu" and _interpreting())):
        return f"x is on {x.device}; the kernel runs on CUDA (on CPU only under TRITON_INTERPRET=1)"
    if noise not in SUPPORTED_NOISE:
        return f"noise={noise!r} is not one of {SUPPORTED_NOISE}"
    if not epsilon > 0.0:
        return "epsilon must be > 0 (epsilon = 0 draws no noise)"
    if not 1 <= k <= min(MAX_K, x.shape[1]):
        return f"k={k} must lie in [1, min({MAX_K}, number of columns {x.shape[1]})]"
    if n_perturbations > MAX_DRAWS or n_perturbations * _next_power_of_2(k) > 16384:
        return (f"n_perturbations={n_perturbations} with k={k} exceeds the kernel's registers "
                f"(B <= {MAX_DRAWS} and B * next_pow2(k) <= 16384)")
    return None


def supports(x, k, epsilon, n_perturbations, noise):
    """True when :func:`kth_largest_perturbed_triton` can take this call.

    The one place that says what the kernel handles: a 2-D float32, float16 or
    bfloat16 tensor on CUDA (or on CPU under ``TRITON_INTERPRET=1``), Triton
    installed, ``noise`` in :data:`SUPPORTED_NOISE`, ``epsilon > 0``,
    ``1 <= k <= min(MAX_K, C)`` and B within the register budget. See
    :func:`unsupported_reason` for the reason of a refusal.
    """
    return unsupported_reason(x, k, epsilon, n_perturbations, noise) is None


def _fast_math(device):
    # libdevice's fast_* exist on NVIDIA only; the interpreter runs no libdevice.
    return device.type == "cuda" and torch.version.hip is None


def _on_device(device):
    # Triton launches on the current CUDA device, which need not be x's.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _draw_seed(generator, device):
    # A device tensor: the kernel reads it, so no host sync and graph-capturable.
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, generator=generator, device=device)


def kth_largest_perturbed_triton(x, k, epsilon, n_perturbations, generator=None,
                                 noise="independent", *, seed=None, explicit_noise=None,
                                 config=None):
    """Fused-kernel twin of :func:`sktopk._perturbed.kth_largest_perturbed_torch`.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
        float32, float16 or bfloat16 scores, on CUDA (or on CPU under
        ``TRITON_INTERPRET=1``). Any strides.
    k, epsilon, n_perturbations, generator, noise
        As in :func:`sktopk._perturbed.kth_largest_perturbed_torch`. ``generator``
        is used once per call, for the Philox key.
    seed : torch.Tensor of shape (1,), int64, optional
        The Philox key on ``x``'s device, instead of drawing it from ``generator``
        (tests and benchmarks).
    explicit_noise : torch.Tensor of shape (B, N, C) or (B, 1, C), optional
        Read the noise from this tensor instead of generating it (the testing
        hook: the same noise as the torch path gives the same results).
    config : tuple (lanes, block, num_warps), optional
        Launch configuration, default :func:`launch_config`. Results do not
        depend on it.

    Returns
    -------
    values : torch.Tensor of shape (N,), x.dtype
        Mean over the draws of the k-th largest perturbed value.
    indices : torch.Tensor of shape (N, B), int64
        Column of the k-th largest perturbed value for each draw.

    Raises
    ------
    ValueError
        When :func:`supports` is False for the call.
    """
    reason = unsupported_reason(x, k, epsilon, n_perturbations, noise)
    if reason is not None:
        raise ValueError(f"The Triton kernel cannot take this call: {reason}. Use "
                         "sktopk._perturbed.kth_largest_perturbed_torch (the dispatcher "
                         "does so by itself).")
    n_rows, n_cols = x.shape
    values = torch.empty(n_rows, dtype=x.dtype, device=x.device)
    indices = torch.empty((n_rows, n_perturbations), dtype=torch.int64, device=x.device)
    if n_rows == 0:
        return values, indices
    lanes, block, num_warps = config or launch_config(n_cols, n_perturbations, k)
    if lanes < n_perturbations or block % 4:
        raise ValueError(f"bad launch config {config}: need lanes >= B and block % 4 == 0.")
    rows_per_program = lanes // n_perturbations
    if explicit_noise is not None:
        stream_rows = 1 if noise == "shared" else n_rows
        expected = (n_perturbations, stream_rows, n_cols)
        if tuple(explicit_noise.shape) != expected:
            raise ValueError(f"explicit_noise must have shape {expected}, "
                             f"got {tuple(explicit_noise.shape)}.")
        noise_arg, noise_strides = explicit_noise, explicit_noise.stride()
        seed_arg = values  # unused: any pointer will do
    else:
        noise_arg, noise_strides = values, (0, 0, 0)
        seed_arg = _draw_seed(generator, x.device) if seed is None else seed
    grid = (triton.cdiv(n_rows, rows_per_program),)
    with _on_device(x.device):
        _kth_perturbed_kernel[grid](
            x, noise_arg, seed_arg, values, indices,
            n_rows, n_cols, n_perturbations, rows_per_program,
            x.stride(0), x.stride(1), *noise_strides,
            float(epsilon), float(n_perturbations),
            float(np.float32(1.0) / np.float32(n_perturbations)),
            K=k, K_PAD=max(2, _next_power_of_2(k)), LANES=lanes, BLOCK=block,
            ROWS_PAD=max(2, _next_power_of_2(rows_per_program)),
            SHARED=noise == "shared", EXPLICIT_NOISE=explicit_noise is not None,
            ROUND_TO_INPUT=x.dtype != torch.float32,
            MEAN_BY_RECIPROCAL=x.device.type == "cuda",
            FAST_MATH=_fast_math(x.device), num_warps=num_warps,
        )
    return values, indices


def generated_noise(seed, n_rows, n_cols, n_draws, noise="independent", block=64):
    """The noise Z (B, N or 1, C), float32, that the kernel generates for ``seed``.

    For tests and checks only: the kernel itself never stores it.
    """
    if not AVAILABLE:
        raise RuntimeError("Triton is not installed.")
    stream_rows = 1 if noise == "shared" else n_rows
    out = torch.empty((n_draws, stream_rows, n_cols), dtype=torch.float32, device=seed.device)
    with _on_device(seed.device):
        _gaussian_dump_kernel[(n_draws * stream_rows,)](
            seed, out, stream_rows, n_cols, 1 if noise == "shared" else 0, BLOCK=block,
            FAST_MATH=_fast_math(seed.device),
        )
    return out
