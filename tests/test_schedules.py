import math

import numpy as np
import pytest
from sklearn.datasets import make_classification

from sktopk import TopKClassifier
from sktopk._schedules import ScheduleFactor, make_lr_scheduler


def test_schedule_factors_closed_form():
    cosine = ScheduleFactor("cosine", max_epochs=10)
    assert [cosine(e) for e in range(10)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)])
    step = ScheduleFactor("step", max_epochs=10)
    assert [step(e) for e in range(10)] == pytest.approx([1.0] * 8 + [0.1, 0.01])
    warm = ScheduleFactor("constant", max_epochs=10, warmup_epochs=3)
    assert [warm(e) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert make_lr_scheduler("constant", 10) is None


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_the_estimator_trains_with_the_scheduled_rate(schedule):
    X, y = make_classification(n_samples=200, n_classes=3, n_informative=4, random_state=0)
    clf = TopKClassifier(k=1, hidden_layer_sizes=(8,), max_epochs=10, early_stopping=False,
                         learning_rate=0.01, lr_schedule=schedule, warmup_epochs=1,
                         device="cpu", random_state=0).fit(X, y)
    factor = ScheduleFactor(schedule, 10, 1)
    np.testing.assert_allclose([row["event_lr"] for row in clf.history_],
                               [0.01 * factor(e) for e in range(10)], rtol=1e-6)
