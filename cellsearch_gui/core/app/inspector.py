"""What the inspector shows for one cell (``CellView``): its vote, its nearest reference cells, and in one
line why the call goes against those neighbours when it does (classify.vote_checks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellsearch_gui.core.classify.ewc import adaptive_vote
from cellsearch_gui.core.classify.vote_checks import depth_note, weighting_note


@dataclass
class Neighbour:
    reference_index: int
    path: str
    label: str
    distance: float


@dataclass
class CellView:
    """What the inspector shows for one cell: a query cell, or a reference cell reached from a gallery."""

    kind: str  # query | reference
    index: int
    crop_path: str
    predicted: str
    entropy: float
    k_used: int
    votes: dict[str, float]
    neighbours: list[Neighbour]
    label: str | None  # the user's label (query) or the library label (reference)
    true_label: str | None = None
    weighting: str = ""  # why the call goes against the neighbours: class weights or a deep vote (vote_checks)
    confidence: float | None = None  # calibrated P(correct) of a query cell's prediction (classify.calibration)


def vote_explanation(classifier, predicted: str, scores: np.ndarray, classes: list[str], k_used: int,
                     nearest: list[str]) -> str:
    """Why the vote went against the neighbours: the class weights, else the depth of the vote; empty when
    it did not."""
    weights = classifier.weights
    if len(weights) != len(classes):  # cells just added to the library, votes not yet redone
        return ""
    note = weighting_note(predicted, scores, list(classes), weights, k_used)
    return note.text() if note else depth_note(predicted, nearest, scores, list(classes), weights, k_used)


def reference_cell_view(result, ref_index: int, count: int = 12) -> CellView:
    """A library cell's own weighted vote among the other references: the cell itself is neither its
    neighbour nor a voter."""
    r = result
    c, q = r.classifier, r.classifier.params
    path, label = str(r.reference.paths[ref_index]), r.reference.labels[ref_index]
    dist, ids = c.kneighbors(r.reference.features[ref_index : ref_index + 1], min(q.k_max + 1, len(c.label_ids)))
    others = (ids[0] != ref_index) & (ids[0] >= 0)
    ids, dist = ids[:, others][:, : q.k_max], dist[:, others][:, : q.k_max]
    if not ids.shape[1]:
        return CellView("reference", ref_index, path, label, 0.0, 0, {}, [], label)
    vote = adaptive_vote(c.label_ids[ids], c.weights, q.k_min, q.k_max, q.entropy_threshold, q.growth,
                         q.entropy_norm, q.stopping)
    predicted, scores, k_used = c.classes[int(vote.label_ids[0])], vote.scores[0], int(vote.k_used[0])
    neighbours = [Neighbour(int(j), str(r.reference.paths[j]), r.reference.labels[j], float(d))
                  for j, d in zip(ids[0, :count], dist[0, :count])]
    return CellView("reference", ref_index, path, predicted, float(vote.entropy[0]), k_used,
                    dict(zip(c.classes, map(float, scores))), neighbours, label, None,
                    vote_explanation(c, predicted, scores, c.classes, k_used, [n.label for n in neighbours]))
