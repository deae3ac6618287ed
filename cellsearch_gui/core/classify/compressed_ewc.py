"""EWC over a compressed library index: the core's ``EWCClassifier`` (the same class weights, k schedule,
entropy rule and stopping rule), whose neighbours come from a saved PCA + IVF-PQ index, the ``rerank`` x k
nearest candidates re-ranked by their exact fp32 distance read from the library's vector shards."""

from __future__ import annotations

import dataclasses

import numpy as np

from cellsearch_gui.core.classify.calibration import Calibration
from cellsearch_gui.core.classify.device_vote import library_calibration
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, Predictions, class_weights
from cellsearch_gui.core.index.compressed import DEFAULT_RERANK
from cellsearch_gui.core.index.library_index import LibraryIndex
from cellsearch_gui.core.options import IndexKind


class CompressedSearch:
    """``KnnIndex.search`` over a library index: (distances as the exact index gives them, ids), nearest first."""

    def __init__(self, library: LibraryIndex, rerank: int = DEFAULT_RERANK):
        self.library, self.rerank = library, int(rerank)
        self._vectors = None  # opened on first use: the memory-mapped shards

    @property
    def size(self) -> int:
        return self.library.index.size

    @property
    def resolved_kind(self) -> str:
        return f"compressed+rerank{self.rerank}" if self.rerank else "compressed"

    def vectors(self):
        """ids -> fp32 rows from the library's vector shards (memory-mapped once)."""
        if self._vectors is None:
            self._vectors = self.library.vectors()
        return self._vectors

    def search(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, ids = self.library.index.search(features, k, vectors=self.vectors() if self.rerank else None,
                                              rerank=max(1, self.rerank))
        if self.library.index.metric == "cosine":
            dist = dist**2 / 2  # 1 - cos between unit vectors, as the exact index reports it
        return dist, ids


class CompressedEWC(EWCClassifier):
    """An EWCClassifier fitted on a saved library index instead of fp32 reference features."""

    def __init__(self, params: EWCParams, library: LibraryIndex, rerank: int = DEFAULT_RERANK):
        super().__init__(dataclasses.replace(params, index=IndexKind.AUTO.value))
        self.params = params.validate()
        self.classes, self.label_ids = library.classes, library.label_ids
        self.weights = class_weights(self.label_ids, len(self.classes))
        self.index = CompressedSearch(library, rerank)

    def calibration(self) -> Calibration:
        """P(correct | winning vote share) as the exact library classifier fits it (device_vote): up to
        CALIBRATION_ROWS library cells, each voted with itself left out, their fp32 features read from disk."""
        return library_calibration(self, self.index.vectors())

    def calibrated(self, preds: Predictions) -> Predictions:
        calibration = self.calibration()
        return dataclasses.replace(preds, confidence=calibration(preds.scores), calibration=calibration)

    def fit(self, features, labels, index=None) -> "CompressedEWC":
        raise TypeError("a compressed classifier is fitted on its library index; it takes no features")

    def add(self, features, labels) -> None:
        raise TypeError("a compressed library index cannot take new cells; build it again with them")
