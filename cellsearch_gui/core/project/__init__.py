"""The project folder: an SQLite store of inputs, cells, labels, runs and predictions, plus caches."""

from cellsearch_gui.core.project.store import ProjectStore, open_project  # noqa: F401
