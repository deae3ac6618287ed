"""Model combination (a checklist of the zoo) and the classifier's hyper-parameters; saved with the project."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cellsearch_gui.core import validation
from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.models.checkpoints import status
from cellsearch_gui.core.models.registry import REGISTRY
from cellsearch_gui.core.project.library import library_devices
from cellsearch_gui.core.options import (
    VIEWS,
    DeviceVote,
    EntropyNorm,
    Metric,
    Preset,
    Segmenter,
    StoppingRule,
    values,
)

MODEL_ID = Qt.ItemDataRole.UserRole


class ModelPanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.models = QListWidget()
        self.models.itemChanged.connect(self._changed)
        self.import_button = QPushButton("Import weights…")
        self.import_button.clicked.connect(self._import)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self._download)
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.download_button)

        self.metric = QComboBox()
        self.metric.addItems(values(Metric))
        self.k_min, self.k_max = QSpinBox(), QSpinBox()
        self.k_min.setRange(*validation.K_MIN.spin_range(1000))  # ranges from the core's domains
        self.k_max.setRange(*validation.K_MAX.spin_range(100000))
        self.k_min.valueChanged.connect(self.k_max.setMinimum)  # k_max >= k_min, always
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(*validation.ENTROPY_THRESHOLD.spin_range(1.0))
        self.threshold.setSingleStep(0.05)
        self.entropy_norm = QComboBox()
        self.entropy_norm.addItems(values(EntropyNorm))
        self.entropy_norm.setToolTip("log_k: the paper's H / log k; log_min_kc: H / log min(k, C), "
                                     "which stops earlier on a new device")
        self.stopping = QComboBox()
        self.stopping.addItems(values(StoppingRule))
        self.stopping.setToolTip("when no k reaches the threshold: lowest_entropy keeps the least ambiguous vote; "
                                 "paper votes at the last k (up to the whole library)")
        self.device_vote = QComboBox()
        self.device_vote.addItems(values(DeviceVote))
        self.device_vote.setToolTip("cells you label here: library: they join the library; loo_mix: they also "
                                    "vote on their own, weighted by how well each side predicts them")
        self.query_device = QComboBox()
        self.query_device.setEditable(True)
        self.query_device.lineEdit().setPlaceholderText("a new device")
        self.query_device.setToolTip("the microscope your images come from, as the reference libraries name their "
                                     "devices: library cells from it vote as the cells you label here; empty: a "
                                     "device none of the library's cells come from")
        self.preprocessing = QComboBox()
        self.preprocessing.addItems(values(Preset))
        self.views = QComboBox()
        self.views.addItems([str(v) for v in VIEWS])
        self.views.setToolTip("4 or 8: average over rotations (and flips); slower, orientation-invariant")
        self.segmenter = QComboBox()
        self.segmenter.addItems(values(Segmenter))
        self.diameter = QSpinBox()
        self.diameter.setRange(0, int(validation.DIAMETER_PX.spin_range(2000)[1]))  # 0: the default
        self.diameter.setSpecialValueText("measured on each field")
        self.diameter.setSuffix(" px")
        self.diameter.setToolTip("typical diameter of the cells to find in the fields, in pixels; 0: measured "
                                 "on each field (Analysis > Notes says what was found)")
        self.drop_border = QCheckBox("drop cells touching the image border")
        self.drop_border.setToolTip("off: such cells are kept and flagged (they may be cut off); on: left out, "
                                    "and counted per field in Analysis > Notes")
        self.random_weights = QCheckBox("random weights (control)")
        form = QFormLayout()
        for text, widget in (("metric", self.metric), ("k min", self.k_min), ("k max", self.k_max),
                             ("entropy threshold", self.threshold), ("entropy normalisation", self.entropy_norm),
                             ("stopping rule", self.stopping), ("device vote", self.device_vote),
                             ("query microscope", self.query_device),
                             ("crop preparation", self.preprocessing), ("views", self.views),
                             ("segmenter", self.segmenter), ("cell diameter", self.diameter),
                             ("", self.drop_border), ("", self.random_weights)):
            form.addRow(text, widget)
            signal = (widget.currentTextChanged if widget is self.query_device else None) \
                or getattr(widget, "currentIndexChanged", None) or getattr(widget, "valueChanged", None) \
                or widget.toggled
            signal.connect(self._changed)
        layout = QVBoxLayout(self)
        layout.addWidget(self.models)
        layout.addLayout(buttons)
        layout.addLayout(form)
        self._loading = False
        controller.settings_changed.connect(self.load)
        controller.runner.idle.connect(self.load)  # after a download: weights now present
        controller.inputs_changed.connect(self.load)  # a library added: its devices
        self.load()

    def load(self) -> None:
        self._loading = True
        s = self.controller.workspace.settings
        self.models.clear()
        for spec in REGISTRY.values():
            if "embed" not in spec.roles:
                continue
            present = status(spec).present
            item = QListWidgetItem(f"{spec.id}  ({spec.dim}-d, {spec.licence.split(' ')[0]})"
                                   + ("" if present else "  — weights missing"))
            item.setData(MODEL_ID, spec.id)
            item.setToolTip(f"{spec.weights_source}\nembeds: {spec.layer}\nlicence: {spec.licence}")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if spec.id in s.models else Qt.CheckState.Unchecked)
            self.models.addItem(item)
        p = s.params
        self.metric.setCurrentText(p["metric"])
        self.k_min.setValue(p["k_min"])
        self.k_max.setValue(p["k_max"])
        self.threshold.setValue(p["entropy_threshold"])
        self.entropy_norm.setCurrentText(p["entropy_norm"])
        self.stopping.setCurrentText(p.get("stopping", StoppingRule.PAPER.value))
        self.device_vote.setCurrentText(s.device_vote)
        self.query_device.clear()
        self.query_device.addItems(["", *library_devices(self.controller.workspace.reference_dirs)])
        self.query_device.setCurrentText(s.query_device)
        self.preprocessing.setCurrentText(s.preprocessing)
        self.views.setCurrentText(str(s.views))
        self.segmenter.setCurrentText(s.segmenter)
        self.diameter.setValue(int(s.cell_diameter_px or 0))
        self.drop_border.setChecked(s.drop_border_cells)
        self.random_weights.setChecked(s.weights == "random")
        self._loading = False

    def current(self) -> AnalysisSettings:
        s = AnalysisSettings.from_dict(self.controller.workspace.settings.as_dict())
        s.models = [self.models.item(i).data(MODEL_ID) for i in range(self.models.count())
                    if self.models.item(i).checkState() == Qt.CheckState.Checked]
        s.params = {**s.params, "metric": self.metric.currentText(), "k_min": self.k_min.value(),
                    "k_max": self.k_max.value(), "entropy_threshold": round(self.threshold.value(), 4),
                    "entropy_norm": self.entropy_norm.currentText(), "stopping": self.stopping.currentText()}
        s.device_vote = self.device_vote.currentText()
        s.query_device = self.query_device.currentText().strip()
        s.preprocessing = self.preprocessing.currentText()
        s.views = int(self.views.currentText())
        s.segmenter = self.segmenter.currentText()
        s.cell_diameter_px = float(self.diameter.value()) or None
        s.drop_border_cells = self.drop_border.isChecked()
        s.weights = "random" if self.random_weights.isChecked() else "pretrained"
        return s

    def _changed(self, *_):
        if not self._loading:
            self.controller.apply_settings(self.current(), quiet=True)

    def _selected_model(self) -> str | None:
        item = self.models.currentItem()
        return item.data(MODEL_ID) if item else None

    def _import(self) -> None:
        model = self._selected_model()
        if not model:
            self.controller.inform("select a model in the list first")
            return
        path, _ = QFileDialog.getOpenFileName(self, f"Weights file for {model}")
        if path:
            self.controller.import_weights(model, path)  # hashed and test-loaded on the worker

    def _download(self) -> None:
        model = self._selected_model()
        if model:
            self.controller.download_models([model])
