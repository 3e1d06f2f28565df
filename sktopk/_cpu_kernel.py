"""The compiled CPU kernel of the perturbed k-th largest value (``_cpu_kernel.c``).

Both samplers, in C. The dense one makes one pass per row and draw:
Philox4x32-10 noise, the perturbation and a running top-k list, without the
(N, C) noise buffer and the ``topk`` of the torch path, and without the columns
that no draw can lift into the top k (the noise is bounded, see the C file). The
sparse one is the exact sampler of :mod:`sktopk._sparse_perturbed` (candidates,
then thinning over tiers and the rest of the row). Same distribution as
:func:`sktopk._perturbed.kth_largest_perturbed_torch`, not the same numbers: the
noise comes from a counter-based generator keyed by one 63-bit integer drawn
from the call's ``torch.Generator``, so results depend only on that generator,
never on the thread count. Both check that the rows they read are finite (the
top-K hinge losses leave that check to them), and the sampler rule's estimates
have a compiled form too (:func:`rule_estimates`).

The C source is compiled at first use with the system C compiler (``$CC``, split
as a shell would, else ``cc``) into a per-user cache (``$SKTOPK_CACHE_DIR``, else
``$XDG_CACHE_HOME/sktopk`` or ``~/.cache/sktopk``), keyed by the source, the
compiler, the flags and the CPU. Each library is written under a unique name and
renamed into place, with its SHA-256 beside it; a library whose digest does not
match is rebuilt, never loaded (a truncated one would crash the process). A flag
set that fails where a later one works is marked ``.failed`` and skipped by later
processes. Without a working compiler, or with ``SKTOPK_DISABLE_CPU_KERNEL=1``,
the torch path is used and :func:`unavailable_reason` says why.
"""

import concurrent.futures
import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from ._validation import non_finite_error

#: Longest top list the kernel keeps (k + 1 of the loss); longer ones use torch.
MAX_K = 64
#: Largest |Z| the kernel's noise can take (24-bit uniforms, Box-Muller).
Z_MAX = 5.9

_SOURCE = Path(__file__).with_name("_cpu_kernel.c")
# Vector math from glibc's libmvec first, then plain scalar math, then without
# tuning for the host CPU: the first that compiles and links is used.
_FLAG_SETS = (
    ("-O3", "-march=native", "-fno-math-errno", "-DSKTOPK_VECTOR_MATH", "-lmvec", "-lm"),
    ("-O3", "-march=native", "-fno-math-errno", "-lm"),
    ("-O3", "-fno-math-errno", "-lm"),
)
# Draws (rows x columns x B) per task at least, when a call is split across
# threads: enough work that the pool's overhead (tens of microseconds) does not show.
_MIN_DRAWS_PER_TASK = 2_000_000
# What the sampling functions return for rows holding NaN or an infinity (they
# check the rows they read, so the losses need not read the scores once more).
_NON_FINITE = -2

_lock = threading.Lock()
_library = None
_reason = None
_pool = None


def _after_fork_in_child():
    # The child has none of the parent's threads: a lock some thread held at the
    # fork would stay held forever, and the pool's workers are gone.
    global _lock, _pool
    _lock = threading.Lock()
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cache_dir():
    """The shared per-user cache directory (absolute: ``dlopen`` searches the
    system paths for a name without a slash)."""
    if os.environ.get("SKTOPK_CACHE_DIR"):
        return Path(os.environ["SKTOPK_CACHE_DIR"]).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).absolute() / "sktopk"


# /proc/cpuinfo lines that tell CPUs apart: x86's "flags", ARM's "Features" and
# its part numbers (platform.processor() is empty on Linux ARM).
_CPU_FIELDS = ("flags", "Features", "CPU implementer", "CPU architecture", "CPU variant",
               "CPU part", "model name")


def _machine_key(cpuinfo="/proc/cpuinfo"):
    # -march=native code must not be reused on another CPU sharing the cache.
    fields = {}
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                name = line.split(":", 1)[0].strip()
                if name in _CPU_FIELDS and name not in fields:
                    fields[name] = line.strip()
    except OSError:
        pass
    cpu = "|".join(fields[name] for name in _CPU_FIELDS if name in fields)
    return f"{platform.machine()}|{platform.processor()}|{cpu}|{sys.platform}"


def _digest_path(library_path):
    return library_path.with_name(library_path.name + ".sha256")


def _is_complete(library_path):
    """Whether ``library_path`` is a library this module wrote whole.

    A truncated shared library does not fail to load, it crashes the process
    (SIGBUS), so the build records the file's digest beside it and a file whose
    digest is missing or differs is rebuilt, never loaded.
    """
    try:
        expected = _digest_path(library_path).read_text().strip()
        return hashlib.sha256(library_path.read_bytes()).hexdigest() == expected
    except OSError:
        return False


def _umask():
    """The process's umask, read without changing it (Linux); None elsewhere (the
    file then stays private: os.umask cannot be read without setting it, for
    every thread of the process)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _write_atomically(path, data):
    # A unique name per build (two containers may share a cache and a pid), then
    # a rename: a concurrent process sees either no file or a whole one.
    handle, staged = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a cache shared by several users
        # (or built into a container image) needs the usual umask-based mode.
        umask = _umask()
        if umask is not None and hasattr(os, "fchmod"):
            os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def _compile(compiler, flags, target):
    """Build the library at ``target``; None on success, else the error's last line."""
    compile_flags = [flag for flag in flags if not flag.startswith("-l")]
    libraries = [flag for flag in flags if flag.startswith("-l")]
    with tempfile.TemporaryDirectory() as scratch:
        obj = Path(scratch) / "kernel.o"
        lib = Path(scratch) / "kernel.so"
        # Compile and link in two steps: linking a shared library with math
        # flags such as -ffast-math can pull in start-up code that changes the
        # floating-point mode of the whole process; none is passed here anyway.
        for command in (
            [*compiler, *compile_flags, "-fPIC", "-c", str(_SOURCE), "-o", str(obj)],
            [*compiler, "-shared", str(obj), "-o", str(lib), *libraries],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                return (done.stderr or done.stdout).strip().splitlines()[-1:] or ["failed"]
        target.parent.mkdir(parents=True, exist_ok=True)
        data = lib.read_bytes()
        _write_atomically(target, data)
        _write_atomically(_digest_path(target), hashlib.sha256(data).hexdigest().encode())
    return None


def _declare(library):
    # Both paths take (x, C, k, eps, B, seed, row_begin, row_end, <own>, values, indices).
    head = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_double, ctypes.c_int64,
            ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64]
    tail = [ctypes.c_void_p, ctypes.c_void_p]
    own = {"sktopk_kth_perturbed": [ctypes.c_int],  # skip
           "sktopk_kth_perturbed_sparse": [ctypes.c_int64, ctypes.c_int64]}  # m, pool
    for name, middle in own.items():
        for suffix in ("f32", "f64"):
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes = head + middle + tail
            function.restype = ctypes.c_int
    for suffix in ("f32", "f64"):
        function = getattr(library, f"sktopk_order_statistics_{suffix}")
        function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                             ctypes.c_void_p]
        function.restype = ctypes.c_int
    for suffix in ("f32", "f64"):
        function = getattr(library, f"sktopk_rule_estimates_{suffix}")
        function.argtypes = ([ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
                             + [ctypes.c_void_p] * 7 + [ctypes.c_int64, ctypes.c_int64]
                             + [ctypes.c_void_p, ctypes.c_void_p])
        function.restype = ctypes.c_int
    library.sktopk_expected_kth.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_double, ctypes.c_void_p,
                                            ctypes.c_int64, ctypes.c_void_p]
    library.sktopk_expected_kth.restype = None
    library.sktopk_upper_quantile.argtypes = [ctypes.c_double]
    library.sktopk_upper_quantile.restype = ctypes.c_double
    for bound in (library.sktopk_upper_tail_bound, library.sktopk_lower_tail_bound):
        bound.argtypes = [ctypes.c_double]
        bound.restype = ctypes.c_double
    library.sktopk_normal_beyond.argtypes = [ctypes.c_double, ctypes.c_uint64, ctypes.c_int64,
                                             ctypes.c_void_p]
    library.sktopk_normal_beyond.restype = None
    library.sktopk_normals.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                                       ctypes.c_int64, ctypes.c_void_p]
    library.sktopk_normals.restype = None
    return library


def _writable(directory):
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.access(directory, os.W_OK)
    except OSError:
        return False


def _load():
    """Build (once per machine) and load the library; sets ``_reason`` on failure."""
    global _reason
    if os.environ.get("SKTOPK_DISABLE_CPU_KERNEL", "0") not in ("", "0"):
        _reason = "disabled by SKTOPK_DISABLE_CPU_KERNEL"
        return None
    compiler_name = os.environ.get("CC") or "cc"
    compiler = shlex.split(compiler_name)  # CC="ccache gcc" is a command, not a name
    try:
        source = _SOURCE.read_bytes()
    except OSError as exc:  # no source installed
        _reason = f"the kernel cannot be built here ({exc})"
        return None
    try:
        shared = _cache_dir()
    except RuntimeError:  # no home directory (a uid without a passwd entry)
        shared = None
    names = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(
            b"\0".join([source, compiler_name.encode(), " ".join(flags).encode(),
                        _machine_key().encode()])
        ).hexdigest()[:16]
        names.append(f"cpu_kernel-{key}.so")
    # A library built earlier, by this or another process, even in a read-only cache.
    for name in names:
        if shared is not None and _is_complete(shared / name):
            try:
                return _declare(ctypes.CDLL(str(shared / name)))
            except OSError:
                continue
    if shared is not None and _writable(shared):
        return _build_and_load(compiler, compiler_name, names, shared)
    # A read-only or missing home (some containers): build for this process only,
    # in a private directory removed once the library is loaded.
    with tempfile.TemporaryDirectory(prefix="sktopk-kernel-",
                                     ignore_cleanup_errors=True) as private:
        return _build_and_load(compiler, compiler_name, names, Path(private))


def _build_and_load(compiler, compiler_name, names, directory):
    global _reason
    errors, failed = [], []
    for flags, name in zip(_FLAG_SETS, names, strict=True):
        target = directory / name
        try:
            # This flag set failed here before, and a later one worked.
            failure = target.with_name(name + ".failed").read_text().strip()
        except OSError:  # no marker (or one this user cannot read)
            failure = None
        if failure is not None:
            errors.append(f"{' '.join(flags)}: {failure}")
            continue
        try:
            if not _is_complete(target):
                error = _compile(compiler, flags, target)
                if error is not None:
                    errors.append(f"{' '.join(flags)}: {error[0]}")
                    failed.append((target, error[0]))
                    continue
            library = _declare(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
            continue
        # The compiler works, so the earlier flag sets failed for their own flags
        # (no libmvec, say): later processes skip them instead of failing again.
        for failed_target, error in failed:
            try:
                _write_atomically(failed_target.with_name(failed_target.name + ".failed"),
                                  error.encode())
            except OSError:
                pass
        return library
    _reason = (f"the C compiler {compiler_name!r} could not build or load it "
               f"({'; '.join(errors)})")
    return None


def library():
    """The loaded kernel library, or None (see :func:`unavailable_reason`)."""
    global _library
    if _library is None and _reason is None:
        with _lock:
            if _library is None and _reason is None:
                _library = _load()
    return _library


def unavailable_reason():
    """Why the compiled CPU kernel cannot run in this process, or None when it can.

    The first call builds the kernel if needed (about half a second, once per
    machine and version). When it cannot run, the losses use torch operations
    instead, with the same results in distribution.

    Returns
    -------
    str or None
        None when the kernel is loaded; else the reason (no C compiler, its
        error, or ``SKTOPK_DISABLE_CPU_KERNEL`` set).

    Examples
    --------
    >>> from sktopk.backends import cpu_kernel_unavailable_reason
    >>> reason = cpu_kernel_unavailable_reason()
    >>> reason is None or isinstance(reason, str)
    True
    """
    library()
    return _reason


def supports(x, k, noise):
    """Whether the kernel takes this call (else the torch path does)."""
    # Columns are 32-bit integers in the C code.
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and noise == "independent" and k <= MAX_K and x.ndim == 2
            and x.shape[1] < 2**31 and library() is not None)


def _thread_pool(workers):
    global _pool
    with _lock:
        # A forked child inherits the pool object but not its threads: make a new
        # one (also reset at fork, above); a larger thread count replaces the pool.
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < workers:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), workers, concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="sktopk-kernel"))
        return _pool[2]


def draw_seed(generator):
    """One 63-bit key for the kernel's noise, drawn from ``generator`` (torch's default if None)."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())


def _run_by_rows(x, n_perturbations, call):
    """Run ``call(begin, end, values, indices)`` over row blocks, on threads when worth it."""
    n_rows, n_columns = x.shape
    values = torch.empty(n_rows, dtype=x.dtype)
    indices = torch.empty((n_rows, n_perturbations), dtype=torch.long)

    def run(begin, end):
        # ctypes releases the GIL for the call, so blocks run in parallel.
        status = call(begin, end, values.data_ptr(), indices.data_ptr())
        if status == _NON_FINITE:
            raise non_finite_error("scores")
        if status != 0:
            raise MemoryError("the CPU kernel could not allocate its per-row buffers.")

    draws = n_rows * n_columns * n_perturbations
    tasks = min(torch.get_num_threads(), n_rows, max(1, draws // _MIN_DRAWS_PER_TASK))
    if tasks <= 1:
        run(0, n_rows)
    else:
        bounds = [n_rows * i // tasks for i in range(tasks + 1)]
        futures = [_thread_pool(tasks).submit(run, bounds[i], bounds[i + 1])
                   for i in range(tasks)]
        for future in futures:
            future.result()
    return values, indices


def _required_library():
    """The loaded kernel, or a ValueError that says why there is none."""
    lib = library()
    if lib is None:
        raise ValueError(f"the CPU kernel is not available: {unavailable_reason()}.")
    return lib


def _checked(x, k, noise, name):
    """``x`` contiguous and the kernel function ``name`` for its dtype, or a ValueError."""
    if not supports(x, k, noise):
        reason = unavailable_reason() or "unsupported dtype, device, noise, k or C >= 2**31"
        raise ValueError(f"the CPU kernel cannot take this call: {reason}.")
    # The C code reads its top list at k - 1 and fills it from the row: 1 <= k <= C.
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must lie between 1 and the number of columns ({x.shape[1]}), "
                         f"got k={k}.")
    suffix = "f32" if x.dtype == torch.float32 else "f64"
    return x.contiguous(), getattr(library(), f"{name}_{suffix}")


def kth_largest_perturbed_cpu(x, k, epsilon, n_perturbations, generator=None,
                              noise="independent", skip=True):
    """Monte-Carlo k-th largest value of ``x + epsilon * Z`` along the last dim, fused.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C), float32 or float64, on CPU
        Scores, detached. Rows holding NaN or an infinity raise the losses'
        ValueError (the kernel checks each row it reads).
    k, epsilon, n_perturbations, generator, noise
        As in :func:`sktopk._perturbed.kth_largest_perturbed_torch`; ``noise``
        must be "independent" and ``k <= MAX_K``.
    skip : bool, default=True
        Leave out the columns no draw can lift into the top k. The result is
        the same either way (tests compare the two); False is for those tests.

    Returns
    -------
    values : torch.Tensor of shape (N,)
    indices : torch.Tensor of shape (N, B), int64
    """
    x, function = _checked(x, k, noise, "sktopk_kth_perturbed")
    seed = draw_seed(generator)
    return _run_by_rows(x, n_perturbations, lambda begin, end, values, indices: function(
        x.data_ptr(), x.shape[1], k, float(epsilon), n_perturbations, seed, begin, end,
        int(skip), values, indices))


def kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_perturbations, generator=None, *, m,
                                     pool):
    """The exact sparse sampler (:mod:`sktopk._sparse_perturbed`), compiled.

    Same method, same distribution as
    :func:`sktopk._sparse_perturbed.kth_largest_perturbed_sparse` with the same
    ``m`` (candidates) and ``pool`` (sorted slots, tiers [m, 2m), [2m, 4m), ...),
    ``k <= m <= pool <= C``; its randomness is a second stream of the kernel's
    generator.

    Returns
    -------
    values : torch.Tensor of shape (N,)
    indices : torch.Tensor of shape (N, B), int64
    """
    x, function = _checked(x, k, "independent", "sktopk_kth_perturbed_sparse")
    n_columns = x.shape[1]
    if not k <= m <= pool <= n_columns:
        raise ValueError(f"need k <= m <= pool <= C, got k={k}, m={m}, pool={pool}, "
                         f"C={n_columns}.")
    seed = draw_seed(generator)
    return _run_by_rows(x, n_perturbations, lambda begin, end, values, indices: function(
        x.data_ptr(), n_columns, k, float(epsilon), n_perturbations, seed, begin, end, m, pool,
        values, indices))


def order_statistics(x, rows, width, head, slots):
    """Sorted top scores of some rows, at the positions the sampler's cost rule reads.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C), float32 or float64, on CPU
    rows : list of int
        The rows to read.
    width : int
        Columns of the result, ``<= C``.
    head : int
        ``out[:, :head]`` holds each row's ``head`` largest scores, sorted descending.
    slots : list of int
        Further positions ``head <= j < width``: ``out[:, j]`` is the (j+1)-th largest.

    Returns
    -------
    torch.Tensor of shape (len(rows), width)
        The entries at other positions are NaN: what the selection does not compute.
    """
    x, function = _checked(x, 1, "independent", "sktopk_order_statistics")
    slots = sorted(set(slots))
    if not (0 <= head <= width <= x.shape[1] and all(head <= j < width for j in slots)
            and all(0 <= r < x.shape[0] for r in rows)):
        raise ValueError(f"need 0 <= head <= slots < width <= C and rows in [0, N), got "
                         f"head={head}, slots={slots}, width={width}, shape={tuple(x.shape)}.")
    row_index = torch.tensor(rows, dtype=torch.int64)
    # The C side takes the slots as segment edges, closed by the width.
    edges = torch.tensor(slots + [width], dtype=torch.int64)
    out = torch.empty((len(rows), width), dtype=x.dtype)
    if function(x.data_ptr(), x.shape[1], row_index.data_ptr(), len(rows), width, head,
                edges.data_ptr(), len(edges), out.data_ptr()) != 0:
        raise MemoryError("the CPU kernel could not allocate its per-row buffers.")
    return out


def rule_estimates(x, plan, rows, k, epsilon, n_rows, n_perturbations, costs):
    """The sampler rule's sparse estimates (ns) of every (m, pool) of ``plan``, in one call.

    The compiled form of ``_sparse_costs(_subset_top(x, k), ...)``
    (:mod:`sktopk._sparse_perturbed`): order statistics of ``rows``, the
    candidates' expected k-th values, the groups' mean rates and the cost of
    each combination.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C), float32 or float64, on CPU
    plan : dict
        From ``sktopk._sparse_perturbed._kernel_rule_plan``: the menu as int64
        tensors (read-only, cached).
    rows : torch.Tensor of int64
        The rows read.
    k, epsilon, n_rows, n_perturbations
        The call's parameters (``n_rows`` those of the whole call).
    costs : sequence of 7 floats
        fixed, pool_score, pool_slot, candidate, pair, group, proposal.

    Returns
    -------
    list of float
        One estimate per combination, in the plan's order.
    """
    x, function = _checked(x, 1, "independent", "sktopk_rule_estimates")
    cost_values = torch.tensor(costs, dtype=torch.float64)
    out = torch.empty(len(plan["combos"]), dtype=torch.float64)
    status = function(
        x.data_ptr(), x.shape[1], rows.data_ptr(), rows.numel(), plan["width"], plan["head"],
        plan["edges"].data_ptr(), plan["edges"].numel(), k, float(epsilon),
        plan["sizes"].data_ptr(), plan["sizes"].numel(), plan["slots"].data_ptr(),
        plan["slots"].numel(), len(plan["combos"]), plan["combo_size"].data_ptr(),
        plan["combo_m"].data_ptr(), plan["combo_pool"].data_ptr(),
        plan["combo_groups"].data_ptr(), plan["pair_start"].data_ptr(),
        plan["pair_slot"].data_ptr(), plan["pair_length"].data_ptr(), n_rows, n_perturbations,
        cost_values.data_ptr(), out.data_ptr())
    if status != 0:
        raise MemoryError("the CPU kernel could not allocate its per-row buffers.")
    return out.tolist()


def expected_kth(top, k, epsilon, sizes):
    """:func:`sktopk._sparse_perturbed._expected_kth`, compiled (float32 throughout).

    Parameters
    ----------
    top : torch.Tensor of shape (R, W)
        Sorted top scores per row, descending, ``W >= max(sizes)``.
    k : int
    epsilon : float
    sizes : list of int
        Candidate counts, each between k and W.

    Returns
    -------
    torch.Tensor of shape (R, len(sizes)), float32
    """
    lib = _required_library()
    top = top.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not (top.ndim == 2 and all(1 <= k <= m <= top.shape[1] for m in sizes)
            and epsilon > 0):
        raise ValueError(f"need 1 <= k <= sizes <= W and epsilon > 0, got k={k}, "
                         f"sizes={sizes}, epsilon={epsilon}, shape={tuple(top.shape)}.")
    size_index = torch.tensor(sizes, dtype=torch.int64)
    out = torch.empty((top.shape[0], len(sizes)), dtype=torch.float32)
    lib.sktopk_expected_kth(top.data_ptr(), top.shape[0], top.shape[1], k, float(epsilon),
                            size_index.data_ptr(), len(sizes), out.data_ptr())
    return out


def kernel_normals(seed, row, draw, n_columns):
    """The kernel's noise for one (row, draw): ``Z[row, draw, :n_columns]`` (float32, tests)."""
    lib = _required_library()
    out = torch.empty(n_columns, dtype=torch.float32)
    lib.sktopk_normals(seed, row, draw, n_columns, out.data_ptr())
    return out
