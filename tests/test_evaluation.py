import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_score,
    recall_score,
)

from cellsearch_gui.core.classify.evaluation import evaluate_predictions


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    truth = list(rng.choice(["a", "b", "c", "d"], 200, p=[0.6, 0.2, 0.15, 0.05]))
    pred = list(rng.choice(["a", "b", "c", "e"], 200))  # 'e' never true, 'd' never predicted
    out = evaluate_predictions(truth, pred)
    classes = sorted(set(truth) | set(pred))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred))
    assert out["macro_precision"] == pytest.approx(
        precision_score(truth, pred, average="macro", labels=classes, zero_division=0))
    assert out["confusion"] == confusion_matrix(truth, pred, labels=classes).tolist()
    recalls = recall_score(truth, pred, average=None, labels=classes, zero_division=0)
    assert [out["per_class"][c]["recall"] for c in classes] == pytest.approx(recalls)


def test_perfect_and_length_mismatch():
    out = evaluate_predictions(["x", "y"], ["x", "y"])
    assert out["balanced_accuracy"] == 1.0 and out["macro_precision"] == 1.0
    with pytest.raises(ValueError):
        evaluate_predictions(["x"], [])
