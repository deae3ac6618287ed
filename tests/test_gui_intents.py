"""The controller is the only writer of the app's state: panels, the welcome dialog and the main window read
the state and call the controller's public intents. Checked on the source, so a new shortcut fails here."""

from __future__ import annotations

import ast
from pathlib import Path

GUI = Path(__file__).resolve().parents[1] / "cellsearch_gui" / "gui"
CHECKED = sorted(GUI.glob("panels/*.py")) + [GUI / "welcome.py", GUI / "main_window.py", GUI / "dialogs.py"]

# what a view may call on the workspace: readers only
WORKSPACE_READERS = {"query_view", "reference_view", "classes", "label_of", "review_queue", "scatter",
                     "reference_counts", "neighbours", "labelled_set", "as_dict", "cache_dir", "count"}
CONTAINER_WRITERS = {"clear", "append", "extend", "update", "pop", "popitem", "remove", "insert", "add",
                     "setdefault", "discard", "sort", "reverse"}


def chain(node: ast.AST) -> tuple[str | None, list[str]]:
    """``self.controller.workspace.settings`` -> ("self", ["controller", "workspace", "settings"])."""
    names = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, (ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        elif isinstance(node, ast.Name):
            return node.id, names[::-1]
        else:
            return None, names[::-1]


class Writes(ast.NodeVisitor):
    """Collects every place a view writes the controller's state or uses its private parts."""

    def __init__(self, where: str):
        self.where = where
        self.aliases: dict[str, list[str]] = {}  # local name -> the controller path it stands for
        self.found: list[str] = []

    def path(self, node: ast.AST) -> list[str]:
        root, names = chain(node)
        if root in self.aliases:
            return self.aliases[root] + names
        return ([root] if root == "controller" else []) + names

    def report(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.where}:{node.lineno}: {what}: {ast.unparse(node)[:90]}")

    def visit_Assign(self, node: ast.Assign) -> None:
        value = self.path(node.value)
        for target in node.targets:
            self.check_target(target)
            if isinstance(target, ast.Name):
                if "controller" in value:
                    self.aliases[target.id] = value
                else:
                    self.aliases.pop(target.id, None)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        outer, self.aliases = self.aliases, {}  # a local name stands for a controller path in its function
        self.generic_visit(node)
        self.aliases = outer

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_target(node.target)
        self.generic_visit(node)

    def check_target(self, target: ast.AST) -> None:
        for element in target.elts if isinstance(target, ast.Tuple) else [target]:
            if isinstance(element, (ast.Attribute, ast.Subscript)) and "controller" in self.path(element)[:-1]:
                self.report(element, "assigns the controller's state")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_") and "controller" in self.path(node.value):
            self.report(node, "uses a private part of the controller")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.path(func.value)
            if "controller" in owner:
                if func.attr == "emit":
                    self.report(node, "emits a controller signal")
                elif owner[-1:] == ["workspace"] and func.attr not in WORKSPACE_READERS:
                    self.report(node, "calls a workspace method that is not a reader")
                elif "workspace" in owner and func.attr in CONTAINER_WRITERS:
                    self.report(node, "changes a workspace container")
                elif "runner" in owner and func.attr != "connect":
                    self.report(node, "drives the job runner")
        if isinstance(func, ast.Name) and func.id == "setattr" and node.args \
                and "controller" in self.path(node.args[0]):
            self.report(node, "setattr on the controller")
        self.generic_visit(node)


def writes_in(source: str, where: str = "<source>") -> list[str]:
    visitor = Writes(where)
    visitor.visit(ast.parse(source))
    return visitor.found


BAD = """
class Panel:
    def bad(self, controller):
        self.controller.workspace.settings = 1
        self.controller.workspace.settings.models = ["a"]
        self.controller.device = "cpu"
        self.controller._start("x", job)
        self.controller.message.emit("hi")
        self.controller.workspace.set_labels({})
        self.controller.workspace.query_paths.clear()
        self.controller.runner.wait(10)
        ws = self.controller.workspace
        ws.settings.cell_diameter_px = 160
        ws.close()
        controller.workspace.user_labels["c"] = "x"
        setattr(self.controller, "selected", 3)
"""

GOOD = """
class Panel:
    def good(self, controller):
        ws = self.controller.workspace
        view = ws.query_view(3)
        self.controller.apply_settings(ws.settings)
        self.controller.runner.idle.connect(self.load)
        self.local = ws.classes()
        busy = self.controller.runner.busy
        controller.selection_changed.connect(self.show)
        self.view = None

    def copy(self):
        s = AnalysisSettings.from_dict(self.controller.workspace.settings.as_dict())
        s.models = []
"""


def test_the_checker_finds_each_kind_of_write():
    found = writes_in(BAD)
    assert len(found) == 12, "\n".join(found)
    assert writes_in(GOOD) == []


def test_views_only_read_the_state_and_call_intents():
    found = [line for path in CHECKED for line in writes_in(path.read_text(encoding="utf-8"), path.name)]
    assert not found, "views must call the controller's intents:\n" + "\n".join(found)


def test_combo_boxes_offer_the_core_vocabulary(qtbot, tmp_path, monkeypatch):
    from cellsearch_gui.core.options import (
        VIEWS,
        Device,
        EntropyNorm,
        Metric,
        Preset,
        Segmenter,
        values,
    )

    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    from cellsearch_gui.gui.app import create_window

    window = create_window()
    qtbot.addWidget(window)
    panel = window.model_panel

    def items(combo):
        return [combo.itemText(i) for i in range(combo.count())]

    assert items(panel.metric) == values(Metric)
    assert items(panel.entropy_norm) == values(EntropyNorm)
    assert items(panel.preprocessing) == values(Preset)
    assert items(panel.segmenter) == values(Segmenter)
    assert items(panel.views) == [str(v) for v in VIEWS]
    device_menu = next(a.menu() for a in window.menuBar().actions()[2].menu().actions() if a.menu())
    assert [a.text() for a in device_menu.actions()] == values(Device)
    window.controller.shutdown()
