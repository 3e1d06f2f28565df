"""Forward + backward cost of the top-K losses: sktopk against pytopk, difftopk and cross-entropy.

Each timed call is ``loss(scores, target).backward()`` with ``scores = randn(N, C)``
requiring grad. Every method is warmed up, then the methods are timed in
interleaved rounds (so machine noise hits them alike) and the median is reported,
with ratios taken within the same run. Peak extra memory on CPU is measured in a
fresh subprocess per case (growth of the resident-set high-water mark over the
inputs); on CUDA with ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/bench_losses.py                  # the acceptance grid (CPU, 1 thread)
    python benchmarks/bench_losses.py --grid full      # N, C, k, B over the whole issue grid
    python benchmarks/bench_losses.py --memory         # also the peak-memory table
    python benchmarks/bench_losses.py --device cuda    # on a GPU

pytopk and difftopk come from the ``bench`` extra (``pip install -e '.[bench]'``);
missing ones are skipped with a note.
"""

import argparse
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from sktopk.functional import (
    imbalanced_topk_hinge_loss,
    smooth_topk_svm_loss,
    topk_hinge_loss,
)

EPSILON = 1.0
# pytopk materialises (N, C, B) noise several times over: past this many
# elements per call it needs more memory than the benchmark machine has.
PYTOPK_MAX_ELEMENTS = 3 * 10**8
DIFFTOPK_MAX_SECONDS = 30.0


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


pytopk = _optional("pytopk")
difftopk = _optional("difftopk")


def make_methods(n, c, k, b, device):
    """name -> callable(scores, target) returning a scalar loss, or None when not applicable."""
    counts = torch.randint(1, 1000, (c,)).tolist()
    gen = torch.Generator(device=device).manual_seed(0)
    methods = {
        "cross_entropy": lambda s, y: F.cross_entropy(s, y),
        "sktopk": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen),
        "sktopk_shared": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen,
                                                      noise="shared"),
        "sktopk_imbal": lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=EPSILON, n_perturbations=b, generator=gen),
        "sktopk_svm": lambda s, y: smooth_topk_svm_loss(s, y, k, tau=1.0),
        "randn_floor": lambda s, y: (s.sum() * 0 + torch.randn(
            n * c * b, device=device, generator=gen).sum() * 0),
    }
    if pytopk is not None and n * c * b <= PYTOPK_MAX_ELEMENTS:
        bal = pytopk.BalNoisedTopK(k=k, epsilon=EPSILON, n_sample=b)
        imbal = pytopk.ImbalNoisedTopK(k=k, epsilon=EPSILON, max_m=0.2, cls_num_list=counts,
                                       scale=60, n_sample=b)
        methods["pytopk"] = lambda s, y: bal(s, y)
        methods["pytopk_imbal"] = lambda s, y: imbal(s, y)
    if difftopk is not None and k < c:
        svm = difftopk.SmoothTopKLoss(c, k, tau=1, device=device)
        methods["difftopk_svm"] = lambda s, y: svm(s, y)
    return methods


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(n, c, k, b, device, repeats, only=None):
    scores = torch.randn(n, c, device=device, requires_grad=True)
    target = torch.randint(0, c, (n,), device=device)
    methods = make_methods(n, c, k, b, device)
    if only:
        methods = {name: fn for name, fn in methods.items() if name in only}

    def run(fn):
        scores.grad = None
        _sync(device)
        start = time.perf_counter()
        fn(scores, target).backward()
        _sync(device)
        return time.perf_counter() - start

    times = {}
    for name, fn in list(methods.items()):  # warm-up; drop methods that are far too slow
        elapsed = run(fn)
        if name == "difftopk_svm" and elapsed > DIFFTOPK_MAX_SECONDS:
            del methods[name]
            times[name] = [elapsed]
    for name in methods:
        times[name] = []
    budget_rounds = repeats
    for _ in range(budget_rounds):
        for name, fn in methods.items():
            times[name].append(run(fn))
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def peak_memory_subprocess(n, c, k, b, method):
    """Peak extra resident memory (bytes) of one call, measured in a fresh process."""
    code = f"""
import torch, json, sys
sys.path.insert(0, {repr(sys.path[0])})
torch.set_num_threads(1)
from bench_losses import make_methods
scores = torch.randn({n}, {c}, requires_grad=True)
target = torch.randint(0, {c}, ({n},))
fn = make_methods({n}, {c}, {k}, {b}, "cpu")[{method!r}]
small = torch.randn(8, {c}, requires_grad=True)
fn(small, target[:8]).backward()  # load code paths before the baseline
def high_water_kib():
    # VmHWM belongs to this process image; ru_maxrss would start at the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = high_water_kib()
fn(scores, target).backward()
print(json.dumps((high_water_kib() - before) * 1024))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        return None
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def grid(name):
    if name == "acceptance":
        return [(1024, c, 5, 10) for c in (100, 1000, 10000)] + [(1024, 1000, 1, 10),
                                                                  (1024, 1000, 20, 10)]
    if name == "full":
        return list(itertools.product((128, 1024), (10, 100, 1000, 10000, 100000), (1, 5, 20),
                                      (5, 10)))
    if name == "quick":
        return [(128, 100, 5, 5), (128, 1000, 5, 10)]
    raise ValueError(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="acceptance", choices=["acceptance", "full", "quick"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak extra memory at N=1024, C=100000, B=10 (CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# bench_losses: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {args.threads} thread(s), device {args.device}, "
          f"epsilon={EPSILON}, median of {args.repeats} interleaved rounds")
    if args.device.startswith("cuda"):
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print(f"# pytopk: {'yes' if pytopk else 'missing'}, difftopk: "
          f"{'yes' if difftopk else 'missing'}")
    columns = ["cross_entropy", "sktopk", "sktopk_shared", "sktopk_imbal", "pytopk",
               "pytopk_imbal", "sktopk_svm", "difftopk_svm", "randn_floor"]
    print("\n| N | C | k | B | " + " | ".join(columns)
          + " | pytopk / sktopk | difftopk_svm / sktopk | difftopk_svm / sktopk_svm "
          "| sktopk / randn |")
    print("|" + "---|" * (4 + len(columns) + 4))
    for n, c, k, b in grid(args.grid):
        if k + 1 > c:
            continue
        ms = time_case(n, c, k, b, args.device, args.repeats)

        def cell(name, ms=ms):
            return f"{ms[name]:.2f}" if name in ms else "-"

        def ratio(a, bb, ms=ms):
            return f"{ms[a] / ms[bb]:.1f}x" if a in ms and bb in ms else "-"

        print(f"| {n} | {c} | {k} | {b} | " + " | ".join(cell(m) for m in columns)
              + f" | {ratio('pytopk', 'sktopk')} | {ratio('difftopk_svm', 'sktopk')} | "
              f"{ratio('difftopk_svm', 'sktopk_svm')} | {ratio('sktopk', 'randn_floor')} |",
              flush=True)
    if args.memory:
        n, c, k, b = 1024, 100000, 5, 10
        score_bytes = n * c * 4
        print(f"\nPeak extra memory, N={n}, C={c}, k={k}, B={b} (scores: "
              f"{score_bytes / 2**20:.0f} MiB)\n")
        print("| method | peak extra MiB | x scores |\n|---|---|---|")
        for method in ("cross_entropy", "sktopk", "sktopk_shared", "sktopk_imbal"):
            peak = peak_memory_subprocess(n, c, k, b, method)
            if peak is None:
                print(f"| {method} | failed | - |")
            else:
                print(f"| {method} | {peak / 2**20:.0f} | {peak / score_bytes:.2f} |",
                      flush=True)
    print(f"\n# max RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
