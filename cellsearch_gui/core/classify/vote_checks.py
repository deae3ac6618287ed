"""What a weighted vote means for a person: cells that voted near-evenly, and a prediction that goes against
the neighbours the user sees, because the class weights turned it or because the vote went on to many more
neighbours than the nearest few.

Near-even rule: a cell voted near-evenly when the runner-up class got at least NEAR_EVEN_RATIO (3/4) of the
winner's weighted vote w_c n_c at the k the vote stopped at: a few more neighbours of the runner-up would
flip the call. A vote over the whole library is exactly even (w_c N_c = N / C), so it is always near-even,
whatever k_max is; a clear winner (e.g. 10 against 0.5) is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_EVEN_RATIO = 0.75  # runner-up / winner weighted vote at or above which a vote is near-even
NEAR_EVEN_SHARE = 0.25  # share of near-even cells at or above which the user is warned


def runner_up_ratio(scores: np.ndarray) -> np.ndarray:
    """Per cell, the runner-up class's weighted vote over the winner's (1: a tie; 0: one class only)."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or not len(scores) or scores.shape[1] < 2:
        return np.zeros(len(scores))
    top2 = -np.partition(-scores, 1, axis=1)[:, :2]
    return np.divide(top2[:, 1], top2[:, 0], out=np.ones(len(scores)), where=top2[:, 0] > 0)


def near_even_share(scores: np.ndarray, ratio: float = NEAR_EVEN_RATIO) -> float:
    """Share of the cells whose weighted vote is near-even (0 when there are none)."""
    r = runner_up_ratio(scores)
    return float((r >= ratio - 1e-9).mean()) if len(r) else 0.0


def near_even_warning(scores: np.ndarray) -> str:
    """A warning when at least NEAR_EVEN_SHARE of the cells voted near-evenly; the rule is in the text."""
    share = near_even_share(scores)
    if share < NEAR_EVEN_SHARE:
        return ""
    return (f"{share:.0%} of the cells voted near-evenly (the runner-up class got at least "
            f"{NEAR_EVEN_RATIO:.0%} of the winner's weighted vote): their classes are barely told apart. Keep only "
            "the classes you expect (Reference library pane), add reference cells, or try Analysis > Suggest a "
            "setting")


@dataclass(frozen=True)
class WeightingNote:
    """A weighted prediction that differs from the plain majority of the k_used neighbours."""

    predicted: str
    majority: str
    majority_count: int
    predicted_count: int
    k_used: int
    majority_library_share: float
    majority_weight: float
    predicted_weight: float

    def text(self) -> str:
        text = (f"called {self.predicted}: {self.majority_count} of {self.k_used} neighbours are {self.majority}, "
                f"but {self.majority} is {self.majority_library_share:.0%} of the library, so each weighs "
                f"{self.majority_weight:.2g} vs {self.predicted_weight:.2g} for {self.predicted} "
                f"({self.predicted_count} of {self.k_used})")
        mine, theirs = self.predicted_count * self.predicted_weight, self.majority_count * self.majority_weight
        if abs(mine - theirs) <= 1e-6 * max(mine, theirs):
            text += ("; the weighted votes tie (as over the whole library), and a tie goes to the class of the "
                     "nearest neighbour")
        return text


def weighting_note(predicted: str, scores: np.ndarray, classes: list[str], weights: np.ndarray,
                   k_used: int) -> WeightingNote | None:
    """Why the class weights w_c = N / (C N_c) turned the vote against the neighbours' majority; None when
    the prediction is the majority class (or a tie with it)."""
    weights = np.asarray(weights, np.float64)
    counts = np.rint(np.divide(np.asarray(scores, np.float64), weights, out=np.zeros(len(weights)),
                               where=weights > 0)).astype(int)
    if predicted not in classes or not counts.sum():
        return None
    top, mine = int(counts.argmax()), classes.index(predicted)
    if counts[top] <= counts[mine]:
        return None
    shares = np.divide(1.0, weights * len(weights), out=np.zeros(len(weights)), where=weights > 0)
    return WeightingNote(predicted, classes[top], int(counts[top]), int(counts[mine]), int(k_used),
                         float(shares[top]), float(weights[top]), float(weights[mine]))


def depth_note(predicted: str, nearest: list[str], scores: np.ndarray, classes: list[str], weights: np.ndarray,
               k_used: int) -> str:
    """Why the prediction is not the majority of the ``nearest`` neighbours (what the gallery shows) although
    it is the majority of the k_used neighbours that voted: the entropy stayed above the threshold, so the
    vote went on to more neighbours. Empty when the nearest agree or every one of them voted."""
    if not nearest or k_used <= len(nearest) or predicted not in classes:
        return ""
    names, counts = np.unique(np.asarray(nearest), return_counts=True)
    top = names[counts.argmax()]
    if top == predicted or counts.max() <= nearest.count(predicted):
        return ""
    weights = np.asarray(weights, np.float64)
    at_k = np.rint(np.divide(np.asarray(scores, np.float64), weights, out=np.zeros(len(weights)),
                             where=weights > 0)).astype(int)
    top_at_k = int(at_k[classes.index(top)]) if top in classes else 0
    return (f"called {predicted}: {counts.max()} of the {len(nearest)} nearest neighbours are {top}, but their "
            f"labels were too mixed to stop there, so the vote went on to k = {k_used} neighbours: "
            f"{int(at_k[classes.index(predicted)])} {predicted} vs {top_at_k} {top}")
