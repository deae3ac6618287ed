"""EWC-FAISS: class-weighted vote over an entropy-guided adaptive number of neighbours.

For a query, k starts at k_min and is multiplied by ``growth`` until the normalised entropy of the
neighbours' labels, H = -sum_c p_c log p_c / log k, falls below the threshold, or k reaches k_max
(capped at the library size). The k_max neighbours are fetched once; every k is evaluated on that list.
The prediction is argmax_c w_c * n_c over the k neighbours, with w_c = N / (C * N_c). Ties go to the
tied class whose nearest member ranks first among the neighbours.

When no k reaches the threshold, the paper's rule (``stopping="paper"``) votes at the last k, which may be
the whole library: there the weighted vote is uniform (w_c * N_c = N / C for every class) and the answer
is the tie-break. ``stopping="lowest_entropy"`` instead keeps the k whose weighted vote p_c ~ w_c n_c has the
lowest entropy / log min(k, C) (ties to the smaller k); a uniform vote has the maximal value, so it is
never preferred to a k whose vote leans to some class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cellsearch_gui.core import validation
from cellsearch_gui.core.classify.calibration import Calibration
from cellsearch_gui.core.errors import FeatureError
from cellsearch_gui.core.index.knn import KnnIndex, check_features
from cellsearch_gui.core.options import EntropyNorm, StoppingRule

ENTROPY_NORMS = tuple(EntropyNorm)
STOPPING_RULES = tuple(StoppingRule)
QUERY_CHUNK = 8192  # queries searched and voted at a time in EWCClassifier.predict
PARAM_DOMAINS = {"metric": validation.METRIC, "k_min": validation.K_MIN, "k_max": validation.K_MAX,
                 "entropy_threshold": validation.ENTROPY_THRESHOLD, "growth": validation.GROWTH,
                 "index": validation.INDEX_KIND, "entropy_norm": validation.ENTROPY_NORM}


class InvalidParams(FeatureError, validation.InvalidSetting):
    """Classifier parameters outside their domain."""


@dataclass
class EWCParams:
    metric: str = "l2"
    k_min: int = 3
    k_max: int = 1000
    entropy_threshold: float = 0.3
    growth: float = 2.0
    index: str = "auto"
    entropy_norm: str = "log_k"  # log_k: the paper's H / log k; log_min_kc: H / log min(k, C)
    stopping: str = "paper"  # no k below the threshold: paper (last k) or lowest_entropy

    def __post_init__(self) -> None:
        """Every field checked against its domain (core/validation.py) when the parameters are made."""
        for name, domain in PARAM_DOMAINS.items():
            domain.check(getattr(self, name), InvalidParams)
        validation.check_k_pair(self.k_min, self.k_max, InvalidParams)
        if self.stopping not in STOPPING_RULES:
            raise InvalidParams(f"unknown stopping rule '{self.stopping}'; choose one of {', '.join(STOPPING_RULES)}")

    def validate(self) -> "EWCParams":
        self.__post_init__()  # again: the fields are mutable
        return self

    def as_dict(self) -> dict:
        """The fields; ``stopping`` only when it is not the paper's rule, so that the JSON and settings files
        of the paper's configuration stay as they were before the rule was selectable."""
        out = asdict(self)
        if out["stopping"] == StoppingRule.PAPER:
            del out["stopping"]
        return out


def k_schedule(k_min: int, k_max: int, growth: float = 2.0) -> list[int]:
    """k_min, k_min*g, k_min*g^2, ... strictly increasing, ending exactly at k_max."""
    ks, k = [], k_min
    while k < k_max:
        ks.append(int(k))
        k = max(int(np.ceil(k * growth)), int(k) + 1)
    ks.append(int(k_max))
    return ks


def class_weights(label_ids: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(label_ids, minlength=n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = len(label_ids) / (n_classes * counts)
    return np.where(counts > 0, weights, 0.0)


def encode_labels(labels: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted classes, class id of each reference, class weights N / (C * N_c))."""
    classes = sorted(set(labels))
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.array([lookup[c] for c in labels], dtype=np.int64)
    return classes, ids, class_weights(ids, len(classes))


def normalised_entropy(counts: np.ndarray, k: int, norm: str = "log_k") -> np.ndarray:
    """-sum p log p / log k (the paper) or / log min(k, C) over the last axis; 0 when the divisor is 0.

    With C classes, -sum p log p <= log min(k, C), so the paper's H can never exceed log C / log k and
    falls below any threshold once k is large; dividing by log min(k, C) keeps H in [0, 1] for every k.
    """
    base = k if norm == "log_k" else min(k, counts.shape[-1])
    if base <= 1:
        return np.zeros(counts.shape[:-1])
    p = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(-1) / np.log(base)


def _row_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    rows = labels.shape[0]
    flat = (labels + n_classes * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n_classes).reshape(rows, n_classes)


def _argmax_with_ties(scores: np.ndarray, neighbour_labels: np.ndarray, k_used: np.ndarray) -> np.ndarray:
    """argmax over classes; a tie goes to the tied class whose nearest member ranks first among the
    k_used neighbours. Only the (usually few) tied rows pay for the rank look-up."""
    best = scores.max(axis=1, keepdims=True)
    tied = scores >= best - 1e-9 * np.abs(best)
    winner = tied.argmax(axis=1)
    multi = np.flatnonzero(tied.sum(axis=1) > 1)
    if multi.size:
        big = np.iinfo(np.int64).max
        depth = int(min(neighbour_labels.shape[1], k_used[multi].max()))
        labels = neighbour_labels[multi, :depth]
        inside = np.arange(depth)[None, :] < k_used[multi, None]
        tied_m = tied[multi]
        first_rank = np.full(tied_m.shape, big, dtype=np.int64)
        for c in np.flatnonzero(tied_m.any(axis=0)):
            hit = (labels == c) & inside
            has = hit.any(axis=1)
            first_rank[has, c] = hit.argmax(axis=1)[has]
        winner[multi] = np.where(tied_m, first_rank, big).argmin(axis=1)
    return winner


@dataclass
class VoteResult:
    """Per-query outcome of the adaptive vote (arrays over queries)."""

    label_ids: np.ndarray  # (Q,)
    k_used: np.ndarray  # (Q,)
    entropy: np.ndarray  # (Q,)
    scores: np.ndarray  # (Q, C) weighted votes at k_used


_VOTE_ROWS_ELEMENTS = 1 << 22  # bound on (schedule length x rows x classes) held at once


def weighted_vote_entropy(counts: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Entropy of the weighted vote p_c ~ w_c n_c over the last axis, / log min(k, C): 1 for a uniform vote
    (e.g. the whole library), 0 for a vote for one class."""
    base = min(k, counts.shape[-1])
    if base <= 1:
        return np.zeros(counts.shape[:-1])
    scores = counts * weights
    p = scores / np.maximum(scores.sum(-1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(-1) / np.log(base)


def vote_ambiguity(scores: np.ndarray, k_used: np.ndarray) -> np.ndarray:
    """Per row, the entropy of the weighted vote ``scores`` (Q, C) / log min(k, C)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(len(scores))
    base = np.minimum(np.asarray(k_used), scores.shape[1])
    p = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return np.where(base > 1, h / np.log(np.maximum(base, 2)), 0.0)


def _fallback_stops(counts_at: np.ndarray, weights: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Per row, the schedule position of the least ambiguous weighted vote (ties to the smaller k)."""
    hw = np.stack([weighted_vote_entropy(counts_at[i], weights, int(k)) for i, k in enumerate(ks)])
    return np.round(hw, 9).argmin(axis=0)


def adaptive_vote_many(neighbour_labels: np.ndarray, weights: np.ndarray, k_min: int, k_max: int,
                       thresholds, growth: float = 2.0, entropy_norm: str = "log_k",
                       stopping: str = "paper") -> list[VoteResult]:
    """``adaptive_vote`` for several entropy thresholds at once: the class counts and entropies at every
    k of the schedule are computed once from the (Q, K) neighbour labels and shared by all thresholds."""
    neighbour_labels = np.asarray(neighbour_labels)
    n_q, fetched = neighbour_labels.shape
    n_classes = len(weights)
    k_cap = min(k_max, fetched)
    ks = np.array(k_schedule(min(k_min, k_cap), k_cap, growth))
    thresholds = list(thresholds)
    step = max(1, _VOTE_ROWS_ELEMENTS // max(1, len(ks) * n_classes))
    if n_q > step:  # bound memory: vote row chunks independently
        parts = [adaptive_vote_many(neighbour_labels[i:i + step], weights, k_min, k_max, thresholds, growth,
                                    entropy_norm, stopping) for i in range(0, n_q, step)]
        return [VoteResult(*(np.concatenate([getattr(p[t], f) for p in parts])
                             for f in ("label_ids", "k_used", "entropy", "scores")))
                for t in range(len(thresholds))]
    counts_at = np.zeros((len(ks), n_q, n_classes), dtype=np.int64)
    h_at = np.zeros((len(ks), n_q))
    counts = np.zeros((n_q, n_classes), dtype=np.int64)
    start = 0
    for i, k in enumerate(ks):
        counts += _row_counts(neighbour_labels[:, start:k], n_classes)
        start = k
        counts_at[i] = counts
        h_at[i] = normalised_entropy(counts, int(k), entropy_norm)
    rows = np.arange(n_q)
    fallback = _fallback_stops(counts_at, weights, ks) if stopping == StoppingRule.LOWEST_ENTROPY else None
    out = []
    for threshold in thresholds:
        below = h_at < threshold
        reached = below.any(axis=0)
        below[-1] = True  # paper: stop at the last k of the schedule whatever the entropy
        stop = below.argmax(axis=0)
        if fallback is not None:
            stop = np.where(reached, stop, fallback)
        k_used = ks[stop].astype(np.int64)
        scores = counts_at[stop, rows] * weights[None, :]
        out.append(VoteResult(_argmax_with_ties(scores, neighbour_labels, k_used), k_used,
                              h_at[stop, rows], scores))
    return out


def adaptive_vote(neighbour_labels: np.ndarray, weights: np.ndarray, k_min: int, k_max: int,
                  threshold: float, growth: float = 2.0, entropy_norm: str = "log_k",
                  stopping: str = "paper") -> VoteResult:
    """Evaluate the whole k schedule on pre-fetched neighbour labels (Q, K), K >= min(k_max, N)."""
    return adaptive_vote_many(neighbour_labels, weights, k_min, k_max, [threshold], growth, entropy_norm,
                              stopping)[0]


@dataclass
class Predictions:
    labels: list[str]
    k_used: np.ndarray
    entropy: np.ndarray
    scores: np.ndarray  # (Q, C), columns follow ``classes``
    classes: list[str]
    neighbour_ids: np.ndarray  # (Q, K) nearest first
    distances: np.ndarray  # (Q, K)
    index_kind: str = "flat"  # the search that produced the neighbours: flat (exact), ivf or hnsw
    threshold: float = 1.0  # the entropy threshold of the vote
    confidence: np.ndarray | None = None  # calibrated P(correct) per cell (classify.calibration); None: not computed
    calibration: Calibration | None = None  # what gave ``confidence``, when the classifier set it itself

    @property
    def ambiguity(self) -> np.ndarray:
        """Entropy of the weighted vote that decided, / log min(k, C): 0 when one class has every vote,
        1 when every class weighs the same (e.g. a vote over the whole library)."""
        return vote_ambiguity(self.scores, self.k_used)

    @property
    def uncertain(self) -> np.ndarray:
        """Cells whose deciding weighted vote is at least as ambiguous as the entropy threshold allows: the
        label is the best guess, and a person should check it. The weights are part of the vote, so the
        ambiguity is that of the weighted vote, on the same 0..1 scale whatever the entropy normalisation."""
        return self.ambiguity >= self.threshold

    def uncertain_ids(self, cells) -> list[str]:
        """Ids of the cells (one per prediction row, in order) answered uncertain; kept with a run."""
        return [cell.cell_id for cell, flag in zip(cells, self.uncertain) if flag]


class EWCClassifier:
    """Reference library + index; ``predict`` runs the adaptive weighted vote."""

    def __init__(self, params: EWCParams | None = None, storage: str = "fp32"):
        """``storage``: how the index holds the references: fp32 (exact, default), fp16, sq8, or pcaN with
        an optional +fp16/+sq8 (see KnnIndex; benchmarks/bench_index.py reports the accuracy change)."""
        self.params = (params or EWCParams()).validate()
        self.storage = storage
        self.index = KnnIndex(metric=self.params.metric, kind=self.params.index, storage=storage)
        self.classes: list[str] = []
        self.label_ids = np.zeros(0, dtype=np.int64)
        self.weights = np.zeros(0)

    def fit(self, features: np.ndarray, labels: list[str], index: KnnIndex | None = None) -> "EWCClassifier":
        """``index``: one already built over exactly these features (e.g. read from a project's cache)."""
        features = check_features(features, "reference features")
        if len(labels) != len(features):
            raise FeatureError(f"{len(labels)} labels for {len(features)} reference vectors")
        self.classes, self.label_ids, self.weights = encode_labels(labels)
        if index is not None and index.size == len(features) and index.dim == features.shape[1]:
            self.index = index
        else:
            self.index.build(features)
        return self

    def add(self, features: np.ndarray, labels: list[str]) -> None:
        """Add labelled references without re-embedding; new classes are allowed."""
        for label in labels:
            if label not in self.classes:
                self.classes.append(label)
        lookup = {c: i for i, c in enumerate(self.classes)}
        self.index.add(features)
        self.label_ids = np.concatenate([self.label_ids, [lookup[c] for c in labels]]).astype(np.int64)
        self.weights = class_weights(self.label_ids, len(self.classes))

    def kneighbors(self, features: np.ndarray, k: int | None = None):
        return self.index.search(features, k or self.params.k_max)

    def predict(self, features: np.ndarray, keep_neighbours: int | None = None) -> Predictions:
        """Adaptive weighted vote for each query. Queries are searched and voted QUERY_CHUNK at a time, so
        memory follows the chunk, not the number of queries; ``keep_neighbours`` keeps only that many
        nearest neighbours per query in the result (None: all k_max), e.g. what a gallery shows."""
        p = self.params
        parts = []
        for start in range(0, len(features), QUERY_CHUNK) if len(features) else [0]:
            dist, ids = self.kneighbors(features[start : start + QUERY_CHUNK], p.k_max)
            vote = adaptive_vote(self.label_ids[ids], self.weights, p.k_min, p.k_max,
                                 p.entropy_threshold, p.growth, p.entropy_norm, p.stopping)
            if keep_neighbours is not None:
                ids, dist = ids[:, :keep_neighbours].copy(), dist[:, :keep_neighbours].copy()
            parts.append((vote, ids, dist))
        if len(parts) == 1:
            vote, ids, dist = parts[0]
        else:
            vote = VoteResult(*(np.concatenate([getattr(v, f) for v, _, _ in parts])
                                for f in ("label_ids", "k_used", "entropy", "scores")))
            ids, dist = np.concatenate([i for _, i, _ in parts]), np.concatenate([d for _, _, d in parts])
        return Predictions([self.classes[i] for i in vote.label_ids], vote.k_used, vote.entropy,
                           vote.scores, list(self.classes), ids, dist, self.index.resolved_kind,
                           p.entropy_threshold)
