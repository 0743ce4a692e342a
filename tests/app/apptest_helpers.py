"""AppTest helpers shared by the page tests.

The app runs in-process (scripts, widgets, session state); its jobs run in real worker processes.

The worker pool is the process-wide one, so TensorFlow starts once per test session; conversions
land in the session's private store (see tests/conftest.py), so repeating a cell is cheap.
"""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
SAMPLES = ROOT / "sample_models"
TIMEOUT = 240          # one script run, including a conversion on a cold worker on a 2-core CI box


def new_app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def upload_model(at: AppTest, filename: str, data: bytes | None = None) -> AppTest:
    data = (SAMPLES / filename).read_bytes() if data is None else data
    at.file_uploader(key="model_upload").upload(filename, data).run()
    return at


def use_sample(at: AppTest, name: str) -> AppTest:
    at.selectbox(key="gallery_pick").set_value(name).run()
    at.button(key="gallery_use").click().run()
    return at


def go(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"pages/{page}.py").run()


def convert(at: AppTest, route: str = "saved_model", optimization: str = "none") -> AppTest:
    go(at, "convert")
    at.radio(key="conv_route").set_value(route)
    at.radio(key="conv_opt").set_value(optimization).run()
    at.button(key="convert").click().run()
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def code_blocks(at: AppTest) -> list:
    """The page's code boxes, without the permalink ones of the 'Copy link' popovers."""
    return [c for c in at.code if "/?run" not in c.value]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def assert_clean(at: AppTest) -> None:
    """No Python exception reached the page (errors must be the project's one-line messages)."""
    assert not at.exception, [e.value for e in at.exception]


STATE_KEYS = ("lab_model", "lab_reference", "lab_samples", "lab_prepared", "lab_prepared_key", "lab_reports",
              "lab_failures", "lab_tolerances", "lab_selected")


def sidebar_texts(at: AppTest, settings: bool = False) -> list[str]:
    """The sidebar as a new session with this one's state would show it.

    AppTest (1.67) keeps only the page's elements after the first run of an st.navigation app, so
    the shared sidebar is read from a fresh first run seeded with the same session state.
    """
    again = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key in STATE_KEYS + (("set_bench", "set_threads", "set_runs") if settings else ()):
        if key in at.session_state:
            again.session_state[key] = at.session_state[key]
    again.run()
    return texts(again.sidebar.markdown) + texts(again.sidebar.caption)
