"""One dense/sparse decision reused over several calls of a loss module."""


class SamplerPlan:
    """The ``sampler="auto"`` choice of a loss module, made again every ``refresh`` calls.

    The rule (:func:`sktopk._sparse_perturbed.choose_sampler`) reads the top
    scores of 16 rows and costs about 0.2 ms per call with the compiled kernel
    (C = 1000; 0.5 ms with cold caches) and 1-3 ms in torch operations, a large
    part of the kernel's own work on a batch of 256 rows. A module called once
    per batch sees scores that drift slowly, so it keeps the decision (the path
    and the sizes) for
    ``refresh`` calls with the same columns, k, epsilon, B and dtype. Either
    path draws exactly the same distribution with any sizes: reuse changes the
    cost only, never the law. The decision depends on the sequence of calls
    alone, so a seeded fit still draws the same numbers on every run; the
    functional losses keep one decision per call.
    """

    def __init__(self, refresh=16):
        self.refresh = refresh
        self._key = None
        self._decision = None
        self._age = 0

    def decide(self, key, make):
        """The decision for a call described by ``key``; ``make()`` computes a new one."""
        if key != self._key or self._age >= self.refresh:
            self._key, self._decision, self._age = key, make(), 0
        self._age += 1
        return self._decision

    def __repr__(self):
        return f"SamplerPlan(refresh={self.refresh}, decision={self._decision!r})"


def sampler_of(module):
    """What ``module`` (a loss with a ``sampler`` attribute) passes to its functional twin.

    Its own :class:`SamplerPlan` for "auto", created at the first call; other
    values as they are.
    """
    if module.sampler != "auto":
        return module.sampler
    plan = getattr(module, "_sampler_plan", None)
    if plan is None:
        plan = module._sampler_plan = SamplerPlan()
    return plan
