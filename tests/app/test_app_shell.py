"""The router and the shared sidebar: pages, settings, state across pages, no TensorFlow in the server."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from apptest_helpers import ROOT, assert_clean, convert, go, metrics, sidebar_texts, texts

PAGES = ("model", "convert", "compare", "size_speed", "matrix")


def test_every_page_renders_without_a_model(app):
    for page in PAGES:
        go(app, page)
        assert_clean(app)
    assert texts(app.title) == ["Matrix"]


def test_the_sidebar_holds_the_settings(app):
    from tflite_lab.runtime import cpu_count
    assert app.toggle(key="set_bench").value is True
    assert app.selectbox(key="set_threads").value is None
    assert app.number_input(key="set_runs").value == 30
    assert f"Latency: 30 timed runs, threads: every core ({cpu_count()})" in sidebar_texts(app)
    app.selectbox(key="set_threads").set_value(1)
    app.number_input(key="set_runs").set_value(10)
    app.run()
    assert "Latency: 10 timed runs, threads: 1" in sidebar_texts(app, settings=True)   # the popover's, shown closed
    app.session_state["set_bench"] = False
    assert "Latency: not measured" in sidebar_texts(app, settings=True)


def test_state_survives_page_switches(digits):
    convert(digits, "saved_model", "dynamic")
    for page in PAGES:
        go(digits, page)
        assert_clean(digits)
    go(digits, "model")
    assert metrics(digits)["Format"] == "keras"              # the model is still there
    go(digits, "convert")
    assert digits.radio(key="conv_opt").value == "dynamic"   # and so are the choices and the result
    assert metrics(digits)["Verdict"] == "PASS"
    assert "Results: 1 converted" in sidebar_texts(digits)


def test_the_server_process_never_imports_tensorflow():
    """First paint must not wait for TensorFlow: every page, after a conversion, in a fresh process."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests" / "app")!r})
        from apptest_helpers import convert, go, new_app, use_sample
        at = new_app()
        use_sample(at, "digits_cnn")
        convert(at, "saved_model", "none")
        for page in {PAGES!r}:
            go(at, page)
            assert not at.exception, page
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]
