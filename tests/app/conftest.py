"""Fixtures for the page tests (helpers in apptest_helpers.py)."""
from __future__ import annotations

import pytest
from apptest_helpers import assert_clean, new_app, use_sample
from streamlit.testing.v1 import AppTest


@pytest.fixture
def app() -> AppTest:
    return new_app()


@pytest.fixture
def digits(app) -> AppTest:
    """The app with the bundled digits CNN (and its shipped samples) loaded."""
    use_sample(app, "digits_cnn")
    assert_clean(app)
    return app
