"""Start the desktop app: QApplication, remembered settings, the main window; heavy libraries load later."""

from __future__ import annotations

import os
import sys
import threading
from importlib.resources import files
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer, Signal
from PySide6.QtWidgets import QApplication

from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.io.user_dirs import user_dir
from cellsearch_gui.core.models.devices import pick_device
from cellsearch_gui.gui.controller import Controller
from cellsearch_gui.gui.error_log import install_exception_hooks, log, start_log_file
from cellsearch_gui.gui.main_window import MainWindow
from cellsearch_gui.gui.welcome import WelcomeDialog
from cellsearch_gui.gui.workers import HEAVY_IMPORTS_DONE

CONFIG_ENV = "CELLSEARCH_CONFIG_DIR"


def config_dir() -> Path:
    return user_dir(CONFIG_ENV, "config")


def app_settings() -> QSettings:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return QSettings(str(folder / "cellsearch.ini"), QSettings.Format.IniFormat)


class DeviceProbe(QObject):
    """Finds the compute device and imports the model libraries off the GUI thread (that takes seconds),
    so the first job starts at once and the window never waits for an import."""

    found = Signal(str)

    def start(self, requested: str) -> None:
        HEAVY_IMPORTS_DONE.clear()

        def probe() -> None:
            try:
                text = describe_device(requested)
                warm_imports()
            except Exception as exc:  # noqa: BLE001 - shown in the status bar; jobs report their own errors
                text = f"device: unknown ({exc})"
            finally:
                HEAVY_IMPORTS_DONE.set()
            try:
                self.found.emit(text)
            except RuntimeError:  # the window closed before the probe answered (its signal is gone)
                pass

        threading.Thread(target=probe, daemon=True, name="device-probe").start()


def warm_imports() -> None:
    """Import the compute libraries now: loading a C extension holds Python's lock, which would pause the
    window for a quarter of a second if it happened in the middle of the first job."""
    import cv2  # noqa: F401
    import faiss  # noqa: F401
    import tifffile  # noqa: F401
    import timm  # noqa: F401
    from PIL import Image  # noqa: F401
    from scipy import ndimage  # noqa: F401


def describe_device(requested: str) -> str:

    device = pick_device(requested)
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return {"mps": "GPU: Apple MPS", "cpu": "CPU (no GPU found)" if requested == "auto" else "CPU"}.get(device, device)


def create_window(argv_paths=(), reference=None, project=None, welcome: bool = False,
                  cell_diameter_px: float | None = None):
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    settings = app_settings()
    controller = Controller(device=str(settings.value("device", "auto")))
    window = MainWindow(controller, settings, "device: finding…")
    if project:
        controller.open_project(project)
    if reference:
        controller.add_reference(reference)
    if cell_diameter_px:  # `cellsearch gui --cell-diameter`: the window's setting, shown in its panel
        settings_now = AnalysisSettings.from_dict(controller.workspace.settings.as_dict())
        settings_now.cell_diameter_px = float(cell_diameter_px)
        controller.apply_settings(settings_now)
    if argv_paths:
        controller.add_queries(list(argv_paths))
    probe = DeviceProbe(window)
    probe.found.connect(window.device_label.setText)  # a QObject slot: queued onto the GUI thread
    window.device_probe = probe
    window.welcome = None
    if welcome and not project and not argv_paths and settings.value("welcome_shown") != "yes":
        window.welcome = WelcomeDialog(controller, window)
        probe.found.connect(window.welcome.show_device)
        settings.setValue("welcome_shown", "yes")
        QTimer.singleShot(0, window.welcome.open)
    probe.start(controller.device)  # after every connection: the probe may answer at once
    return window


def main(paths=(), reference=None, project=None, cell_diameter_px: float | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("CellSearch")

    from PySide6.QtGui import QIcon

    app.setWindowIcon(QIcon(str(files("cellsearch_gui") / "resources" / "cellsearch.png")))
    app.setOrganizationName("CellSearch")
    try:
        log_file = start_log_file()
    except OSError as exc:  # a read-only home: the app still runs, errors are still shown
        log_file = f"none ({exc})"
    window = create_window(paths, reference, project, welcome=not os.environ.get("CELLSEARCH_QUIT_AFTER"),
                           cell_diameter_px=cell_diameter_px)
    install_exception_hooks(window.show_error)  # an uncaught exception is logged and shown, the app stays up
    log.info("CellSearch started; log file %s", log_file)
    window.show()
    quit_after = os.environ.get("CELLSEARCH_QUIT_AFTER")
    if quit_after:  # smoke tests: start, show, quit
        QTimer.singleShot(int(float(quit_after) * 1000), app.quit)
    app.aboutToQuit.connect(window.controller.shutdown)
    return app.exec()
