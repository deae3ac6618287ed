"""First run: the welcome dialog shows the device and the weights, imports them from a folder, and opens
the offline demo, which classifies the sample fields."""


from conftest import SHARED_MODELS, needs_shared


@needs_shared
def test_welcome_import_and_offline_demo(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    import torch  # noqa: F401 - already imported: the device probe answers at once (a race, once)

    from cellsearch_gui.gui.app import create_window

    window = create_window(welcome=True)
    qtbot.addWidget(window)
    window.show_dialogs = False
    welcome = window.welcome
    assert welcome is not None
    qtbot.waitUntil(lambda: "CPU" in welcome.device.text() or "GPU" in welcome.device.text(), timeout=60_000)
    states = {welcome.table.item(r, 0).text(): welcome.table.item(r, 1).text() for r in range(welcome.table.rowCount())}
    assert states["mobilenetv2"] == "missing" and not welcome.demo_button.isEnabled()

    c = window.controller
    with qtbot.waitSignal(c.weights_changed, timeout=300_000):  # hashed and imported on the worker
        welcome.import_folder(str(SHARED_MODELS))
    states = {welcome.table.item(r, 0).text(): welcome.table.item(r, 1).text() for r in range(welcome.table.rowCount())}
    assert states["mobilenetv2"] == states["efficientnet_lite0"] == "present"
    assert welcome.demo_button.isEnabled()

    with qtbot.waitSignal(c.result_changed, timeout=300_000):
        welcome.demo_button.click()
    assert window.last_error is None
    assert len(c.workspace.cells) >= 3 and window.image_panel.chooser.count() >= 3

    second = create_window(welcome=True)  # shown once only
    qtbot.addWidget(second)
    assert second.welcome is None
