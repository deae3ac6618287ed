import pytest
from conftest import PBC, WBC5, make_subset, needs_shared

from cellsearch_gui.core.app.experiments import evaluate_job, load_inputs
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.jobs import run_job


@needs_shared
@pytest.mark.parametrize("model", ["mobilenetv2", "efficientnet_lite0"])
def test_pretrained_beats_random_init(real_weights, tmp_path, model):
    ref = make_subset(PBC, tmp_path / "ref", WBC5, 30)
    query = make_subset(PBC, tmp_path / "q", WBC5, 15, offset=30)
    inputs = load_inputs(ref, query)
    params = EWCParams(k_min=1, k_max=10)  # near-neighbour quality of the embedding itself
    scores = {}
    for weights in ("pretrained", "random"):
        result = run_job(evaluate_job(inputs, [model], params, EmbeddingCache(None),
                                      EmbedOptions(weights=weights)))
        scores[weights] = result.balanced_accuracy
    assert scores["pretrained"] > scores["random"] + 0.15, scores
