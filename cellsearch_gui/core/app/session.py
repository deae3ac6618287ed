"""The open project: inputs, settings, the latest result and the user's labels. Qt-free; the GUI drives it."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from cellsearch_gui.core.app.run import (
    prediction_rows,
    KEPT_NEIGHBOURS,
    AnalysisResult,
    AnalysisSettings,
    RunPlan,
    restore_result,
)
from cellsearch_gui.core.app.inspector import CellView, Neighbour, reference_cell_view, vote_explanation
from cellsearch_gui.core.classify.ewc import QUERY_CHUNK, Predictions
from cellsearch_gui.core.embedding.cache import default_cache_dir
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.dataset import CropSet, load_reference
from cellsearch_gui.core.jobs import CancelToken, Job, Progress, run_job
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.classify.device_vote import device_learning_curve
from cellsearch_gui.core.classify.review import review_order
from cellsearch_gui.core.project.paths import absolute

LEGACY_FILE = "project.json"  # the first app version's project file; converted on open
REPREDICT_CHUNK = 4 * QUERY_CHUNK  # query cells voted again between two progress reports


def join_predictions(parts: list[Predictions]) -> Predictions:
    """Predictions of consecutive query chunks as one (same classifier, so the same classes)."""
    first = parts[0]
    return Predictions([label for p in parts for label in p.labels],
                       *(np.concatenate([getattr(p, name) for p in parts]) for name in ("k_used", "entropy", "scores")),
                       list(first.classes),
                       *(np.concatenate([getattr(p, name) for p in parts]) for name in ("neighbour_ids", "distances")),
                       first.index_kind, first.threshold)


def sample_per_class(labels: list[str], limit: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most about ``limit`` rows (all when fewer): each class keeps its share, and
    small classes at least min(size, 1 % of the limit), so no class disappears from a plot."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    values = np.asarray(labels)
    picked = []
    for name in sorted(set(labels)):
        rows = np.flatnonzero(values == name)
        quota = min(len(rows), max(limit // 100, int(limit * len(rows) / len(labels))))
        picked.append(rng.choice(rows, quota, replace=False))
    return np.sort(np.concatenate(picked))


class Workspace:
    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else None
        self.settings = AnalysisSettings()
        self.reference_dirs: list[str] = []
        self.query_paths: list[str] = []
        self.user_labels: dict[str, str] = {}  # cell_id -> label the user gave
        self.added_to_reference: set[str] = set()
        self.result: AnalysisResult | None = None
        self.store = None  # ProjectStore once the project is saved or opened
        self._folder_counts: tuple[tuple[str, ...], dict[str, int]] | None = None  # scanned once per folder list

    # --- inputs -------------------------------------------------------------------------------------
    def add_reference_dir(self, folder: str | Path) -> None:
        if absolute(folder) not in {absolute(p) for p in self.reference_dirs}:  # one folder, however spelt
            self.reference_dirs.append(str(folder))

    def add_query_paths(self, paths) -> None:
        for path in map(str, paths):
            if absolute(path) not in {absolute(p) for p in self.query_paths}:
                self.query_paths.append(path)

    def plan(self, device: str = "auto") -> RunPlan:
        if not self.reference_dirs:
            raise DatasetError("add a reference library first (a folder with one sub-folder of cells per class)")
        if not self.query_paths:
            raise DatasetError("drop images or a folder of cells to classify")
        work = self.work_dir()
        return RunPlan(tuple(self.reference_dirs), tuple(self.query_paths),
                       AnalysisSettings.from_dict(self.settings.as_dict()), work, self.cache_dir(), device,
                       self.folder if self.store is not None and not self.store.readonly else None,
                       self.extra_references())

    def extra_references(self) -> tuple[tuple[str, str], ...]:
        """Query cells the user added to the library (crop, label): part of every later run."""
        crops = {c.cell_id: c.crop_path for c in self.cells}
        if self.store is not None and any(uid not in crops for uid in self.added_to_reference):
            crops.update({c.cell_id: c.crop_path for c in self.store.cells()})
        return tuple((crops[uid], self.user_labels[uid]) for uid in sorted(self.added_to_reference)
                     if uid in crops and uid in self.user_labels)

    def cache_dir(self) -> Path:
        """Folder of the embedding cache (embeddings.sqlite): the project's own, else the user cache."""
        return self.folder if self.folder else default_cache_dir()

    def work_dir(self) -> Path:
        if self.folder:
            return self.folder

        return Path(tempfile.gettempdir()) / "cellsearch-unsaved"

    # --- results and labels -------------------------------------------------------------------------
    def apply(self, result: AnalysisResult) -> None:
        self.result = result

    @property
    def cells(self):
        return self.result.cells if self.result else []

    def classes(self) -> list[str]:
        return list(self.result.classifier.classes) if self.result else []

    def label_of(self, index: int) -> str | None:
        return self.user_labels.get(self.cells[index].cell_id)

    def set_label(self, index: int, label: str | None) -> None:
        self.set_labels({self.cells[index].cell_id: label})

    def set_labels(self, labels: dict[str, str | None]) -> None:
        """Labels by cell id; stored at once (with who and when) when a project is open."""
        if self.store is not None:
            self.store.set_labels(labels)
        for cell_id, label in labels.items():
            if label:
                self.user_labels[cell_id] = label
            else:
                self.user_labels.pop(cell_id, None)

    def accept(self, index: int) -> None:
        self.set_label(index, self.result.predictions.labels[index])

    def review_queue(self) -> list[int]:
        """Cells the user has not labelled, the one whose label teaches the most first: an ambiguous vote on a
        cell typical of the unlabelled ones (classify.review)."""
        if not self.result:
            return []
        todo = [i for i, c in enumerate(self.cells) if c.cell_id not in self.user_labels]
        return review_order(self.result.query.features, self.result.predictions.ambiguity, todo)

    def device_curve(self) -> list[dict]:
        """How well the library knows this device (classify.device_vote.device_learning_curve): the
        leave-one-out accuracy on the cells the user labelled here, in the order labelled, of the library with
        them in it and of those cells alone."""
        r = self.result
        if r is None:
            return []
        row_of = {c.cell_id: i for i, c in enumerate(self.cells)}
        rows = [row_of[uid] for uid in self.user_labels if uid in row_of]
        n_library = len(r.reference.labels) - len(self.added_to_reference)  # added cells sit at the end
        return device_learning_curve(r.reference.features[:n_library], list(r.reference.labels[:n_library]),
                                     r.query.features[rows], [self.user_labels[self.cells[i].cell_id] for i in rows],
                                     r.classifier.params)

    def device_curve_job(self, token: CancelToken | None = None) -> Job[list[dict]]:
        yield Progress("leave-one-out on the labelled cells", 0, 1)
        curve = self.device_curve()
        yield Progress("leave-one-out on the labelled cells", 1, 1)
        return curve

    def add_to_reference(self, indices) -> int:
        """Add labelled cells to the index (no re-embedding) and re-predict every cell."""
        added = self.add_to_library(indices)
        if added:
            self.apply_predictions(run_job(self.repredict_job()))
        return added

    def add_to_library(self, indices) -> int:
        """The labelled cells among ``indices`` join the index (no re-embedding); the predictions stay as
        they were until ``repredict_job`` and ``apply_predictions``."""
        r = self.result
        picked = [i for i in indices if self.label_of(i) and self.cells[i].cell_id not in self.added_to_reference]
        if not picked:
            return 0
        labels = [self.label_of(i) for i in picked]
        if self.settings.classes is not None:  # a class the user labelled is one they want
            self.settings.classes += sorted(set(labels) - set(self.settings.classes))
        r.classifier.add(r.query.features[picked], labels)
        r.reference.append_rows(r.query, picked, labels)
        self.added_to_reference.update(self.cells[i].cell_id for i in picked)
        if self.store is not None and not self.store.readonly:
            self.store.set_meta("added_to_reference", sorted(self.added_to_reference))
        return len(picked)

    def repredict_job(self, token: CancelToken | None = None) -> Job[Predictions]:
        """Every query cell voted again against the library as it is now; reads the result, changes nothing
        (so it can run on a worker thread while the window shows the old predictions)."""
        r = self.result
        features, total = r.query.features, len(r.query.features)
        parts = []
        for start in range(0, total, REPREDICT_CHUNK) if total else [0]:
            if token is not None:
                token.raise_if_cancelled()
            yield Progress("predicting", start, total)
            parts.append(r.classifier.predict(features[start : start + REPREDICT_CHUNK],
                                              keep_neighbours=KEPT_NEIGHBOURS))
        yield Progress("predicting", total, total)
        return parts[0] if len(parts) == 1 else join_predictions(parts)

    def apply_predictions(self, predictions: Predictions) -> None:
        """New votes for the same cells (after ``add_to_library``), recorded as a run of the project."""
        r = self.result
        r.predictions = predictions
        if self.store is not None and not self.store.readonly:
            p = predictions
            run = self.store.start_run("add to reference", self.settings.as_dict())
            provenance = {**r.provenance, "uncertain_cells": p.uncertain_ids(self.cells),
                          "added_to_reference": sorted(self.added_to_reference)}
            self.store.finish_run(run, "finished", provenance, [], prediction_rows(self.cells, p))

    def labelled_set(self) -> CropSet:
        """The query cells the user has labelled: validation cells of this device (for suggestions)."""
        picked = [c for c in self.cells if c.cell_id in self.user_labels]
        return CropSet([Path(c.crop_path) for c in picked], [self.user_labels[c.cell_id] for c in picked],
                       cell_ids=[c.cell_id for c in picked])

    def neighbours(self, index: int, count: int = 12) -> list[Neighbour]:
        r = self.result
        ids = r.predictions.neighbour_ids[index, :count]
        dists = r.predictions.distances[index, :count]
        return [Neighbour(int(j), str(r.reference.paths[j]), r.reference.labels[j], float(d))
                for j, d in zip(ids, dists) if j >= 0]

    def query_view(self, index: int, count: int = 12) -> CellView:
        r, cell = self.result, self.cells[index]
        p, nearest = r.predictions, self.neighbours(index, count)
        return CellView("query", index, cell.crop_path, p.labels[index], float(p.entropy[index]),
                        int(p.k_used[index]), dict(zip(p.classes, map(float, p.scores[index]))),
                        nearest, self.label_of(index), cell.true_label,
                        self._weighting(p.labels[index], p.scores[index], p.classes, int(p.k_used[index]),
                                        [n.label for n in nearest]),
                        None if p.confidence is None else float(p.confidence[index]))

    def _weighting(self, predicted: str, scores: np.ndarray, classes: list[str], k_used: int,
                   nearest: list[str]) -> str:
        return vote_explanation(self.result.classifier, predicted, scores, classes, k_used, nearest)

    def reference_view(self, ref_index: int, count: int = 12) -> CellView:
        """A library cell seen the same way: its own weighted vote among the other references (the cell
        itself is neither its neighbour nor a voter)."""
        return reference_cell_view(self.result, ref_index, count)

    def scatter(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """2-D PCA of reference cells (with their labels) and of the query cells."""
        r = self.result
        return r.project(r.reference.features), list(r.reference.labels), r.project(r.query.features)

    def reference_counts(self) -> dict[str, int]:
        """Cells per class of the library folders, every class whether in use or not; the classes of the
        last run as it saw them (with the cells the user added)."""
        counts = {}
        try:
            counts.update(self.folder_counts())
        except DatasetError:
            if not self.result:  # folders gone: the restored run still tells its classes
                raise
        if self.result:
            counts.update(Counter(self.result.reference.labels))
        return dict(sorted(counts.items()))

    def folder_counts(self) -> dict[str, int]:
        key = tuple(self.reference_dirs)
        if self._folder_counts is None or self._folder_counts[0] != key:
            self._folder_counts = key, (load_reference(self.reference_dirs).counts() if key else {})
        return dict(self._folder_counts[1])

    def classes_in_use(self) -> list[str]:
        """The library classes the classifier is built on (settings.classes; all when None)."""
        known = list(self.reference_counts())
        return known if self.settings.classes is None else [c for c in known if c in self.settings.classes]

    def choose_classes(self, classes: list[str]) -> None:
        """Build the classifier on these classes only, from the next run on; every class: None (all)."""
        known = list(self.reference_counts())
        chosen = [c for c in known if c in set(classes)]
        self.settings.classes = None if set(chosen) >= set(known) else chosen

    # --- project store ----------------------------------------------------------------------------
    def save(self, folder: str | Path | None = None) -> Path:
        """Write settings, inputs and labels into the project (created on first save). Labels are also
        written the moment they are given once a project is open."""

        target = Path(folder) if folder else self.folder
        if target and (self.store is None or target != self.folder):
            self.close()
            self.store = open_project(target, create=True, purpose="the CellSearch window")
            self.folder = target
            self.store.set_labels(self.user_labels)
        if self.store is None:
            raise DatasetError("choose a project folder first")
        self.store.set_meta("settings", self.settings.as_dict())
        for path in self.reference_dirs:
            self.store.add_source("reference", path, self.settings.reference_pixel_size_um)
        for path in self.query_paths:
            self.store.add_source("query", path, self.settings.query_pixel_size_um)
        return self.folder

    @classmethod
    def open(cls, folder: str | Path, readonly: bool = False, purpose: str = "the CellSearch window") -> "Workspace":

        folder = Path(folder)
        legacy = folder / LEGACY_FILE
        if legacy.is_file() and not (folder / "project.sqlite").is_file():
            return cls._convert_legacy(folder)
        ws = cls(folder)
        ws.store = open_project(folder, readonly=readonly, purpose=purpose)
        saved = ws.store.get_meta("settings", {})
        ws.settings = AnalysisSettings.from_dict(saved if isinstance(saved, dict) else {})
        ws.reference_dirs = [s["path"] for s in ws.store.sources("reference")]
        ws.query_paths = [s["path"] for s in ws.store.sources("query")]
        ws.user_labels = ws.store.labels()
        added = ws.store.get_meta("added_to_reference", [])
        ws.added_to_reference = {str(uid) for uid in added} if isinstance(added, list) else set()
        return ws

    @classmethod
    def _convert_legacy(cls, folder: Path) -> "Workspace":
        """A project.json of the first app version becomes a project database (the JSON is kept, renamed)."""
        legacy = folder / LEGACY_FILE
        try:
            raw = json.loads(legacy.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{legacy}: unreadable project file ({exc})") from None
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k, []), list)
                                                for k in ("reference_dirs", "query_paths")):
            raise DatasetError(f"{legacy}: not a CellSearch project file (expected an object with settings, "
                               "reference_dirs and query_paths); it was not changed")
        ws = cls()
        ws.settings = AnalysisSettings.from_dict(raw.get("settings") if isinstance(raw.get("settings"), dict) else {})
        ws.reference_dirs = list(raw.get("reference_dirs", []))
        ws.query_paths = list(raw.get("query_paths", []))
        labels = raw.get("user_labels", {})
        ws.user_labels = {str(k): str(v) for k, v in labels.items() if v} if isinstance(labels, dict) else {}
        ws.save(folder)
        legacy.replace(folder / (LEGACY_FILE + ".converted"))
        return ws

    def restore(self) -> bool:
        """Show the last finished run again from the project's own arrays (no image is read)."""
        result = self.restored_result()
        if result is not None:
            self.apply(result)
        return result is not None

    def restored_result(self) -> AnalysisResult | None:
        """The last finished run rebuilt from the project (the index built again); None when there is none.
        Applies nothing, so it can run on a worker thread."""
        if self.store is None:
            return None
        added = {uid: self.user_labels[uid] for uid in self.added_to_reference if uid in self.user_labels}
        return restore_result(self.store, self.settings, added)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
