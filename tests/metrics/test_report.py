import numpy as np
import pytest

from sktopk.metrics import top_k_report


def _loop_reference(y, scores, labels, counts, ks, low, high, group_average):
    col = {label: j for j, label in enumerate(labels)}
    rank = []
    for i in range(len(y)):
        j = col[y[i]]
        s = scores[i]
        rank.append(sum(1 for m in range(len(s)) if s[m] > s[j] or (s[m] == s[j] and m < j)))

    def accuracy(members, average):
        idx = [i for i in range(len(y)) if members[col[y[i]]]]
        if not idx:
            return [np.nan] * len(ks)
        out = []
        for k in ks:
            if average == "micro":
                out.append(np.mean([rank[i] < k for i in idx]))
            else:
                per_class = [np.mean([rank[i] < k for i in idx if y[i] == c])
                             for c in dict.fromkeys(y[idx].tolist())]
                out.append(np.mean(per_class))
        return out

    every = [True] * len(labels)
    groups = {"many": [c > high for c in counts],
              "medium": [low <= c <= high for c in counts],
              "few": [c < low for c in counts]}
    ref = {"micro": accuracy(every, "micro"), "macro": accuracy(every, "macro")}
    ref.update({g: accuracy(m, group_average) for g, m in groups.items()})
    sizes = {"micro": every, "macro": every, **groups}
    n = {g: (sum(m), sum(1 for i in range(len(y)) if m[col[y[i]]])) for g, m in sizes.items()}
    return ref, n


@pytest.mark.parametrize("group_average", ["macro", "micro"])
def test_against_a_per_class_loop(group_average):
    rng = np.random.default_rng(0)
    for _ in range(15):
        c = int(rng.integers(3, 12))
        labels = rng.permutation(np.arange(100, 100 + c))
        counts = rng.integers(0, 200, c)
        y = rng.choice(labels, int(rng.integers(c, 80)))
        scores = rng.integers(0, 4, (len(y), c)).astype(float)  # many ties
        ks = (1, 2, 5)
        report = top_k_report(y, scores, counts, ks=ks, thresholds=(30, 120), labels=labels,
                              group_average=group_average, output_dict=True)
        ref, n = _loop_reference(y, scores, labels, counts, ks, 30, 120, group_average)
        assert list(report) == ["micro", "macro", "many", "medium", "few"]
        for group, values in ref.items():
            assert (report[group]["n_classes"], report[group]["n_samples"]) == n[group]
            got = [report[group][f"top-{k}"] for k in ks]
            np.testing.assert_allclose(got, values, equal_nan=True)


def test_text_and_frame():
    y = np.array([0, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 2, 0]]
    text = top_k_report(y, scores, [500, 50, 1], ks=(1,), thresholds=(10, 100))
    lines = text.splitlines()
    assert lines[0].split() == ["classes", "samples", "top-1"]
    assert lines[3].split()[:2] == ["many", "(>100)"] and lines[3].split()[-1] == "1.000"
    assert lines[5].split()[-1] == "0.500"  # few: one of the two samples of class 2
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame.from_dict(top_k_report(y, scores, [500, 50, 1], ks=(1,),
                                                output_dict=True), orient="index")
    assert frame.loc["micro", "top-1"] == 0.75


def test_errors():
    y, scores = np.array([0, 1, 2]), np.eye(3)
    with pytest.raises(ValueError, match="class_counts must have shape"):
        top_k_report(y, scores, [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        top_k_report(y, scores, [1, -2, 3])
    with pytest.raises(ValueError, match="increasing"):
        top_k_report(y, scores, [1, 2, 3], thresholds=(100, 20))
    with pytest.raises(ValueError, match="pair"):
        top_k_report(y, scores, [1, 2, 3], thresholds=20)
