"""Model page: upload or pick a sample; format, signature, size, parameters, layers; the samples."""
from __future__ import annotations

from apptest_helpers import SAMPLES, assert_clean, metrics, sidebar_texts, texts, upload_model, use_sample


def test_first_paint_offers_upload_and_gallery(app):
    assert_clean(app)
    assert texts(app.title) == ["Model"]
    assert app.file_uploader(key="model_upload").label == "Model file"
    assert "digits_cnn" in app.selectbox(key="gallery_pick").options
    assert any("None yet" in c for c in texts(app.sidebar.caption))


def test_upload_keras_shows_format_signature_and_layers(app):
    upload_model(app, "digits_cnn.keras")
    assert_clean(app)
    shown = metrics(app)
    assert shown["Format"] == "keras"
    assert shown["Parameters"] == "38,282"
    assert shown["Layers"] == "7"
    assert shown["Inputs / outputs"] == "1 / 1"
    signature = app.dataframe[0].value
    assert list(signature["name"]) == ["image", "probs"]
    assert list(signature["shape"]) == ["(?, 8, 8, 1)", "(?, 10)"]
    layers = app.dataframe[1].value
    assert "Conv2D" in set(layers["class"])
    assert "**digits_cnn.keras**" in sidebar_texts(app)


def test_a_csv_named_h5_gets_a_one_line_error(app):
    upload_model(app, "model.h5", b"a,b,c\n1,2,3\n")
    assert_clean(app)
    errors = texts(app.error)
    assert len(errors) == 1
    assert "model.h5 is CSV text" in errors[0] and "\n" not in errors[0]
    assert app.session_state["lab_model"] is None
    app.run()                                   # still shown while the file stays in the uploader
    assert texts(app.error) == errors


def test_a_bundled_sample_uses_its_shipped_samples(app):
    use_sample(app, "breast_cancer_mlp")
    assert_clean(app)
    assert metrics(app)["Format"] == "h5"
    assert app.radio[0].value == "shipped"
    app.button(key="check_samples").click().run()
    assert_clean(app)
    assert any(s.startswith("64 samples (breast_cancer_mlp.samples.csv)") for s in texts(app.success))
    assert "Samples: breast_cancer_mlp.samples.csv" in sidebar_texts(app)


def test_random_samples_with_seed_and_range(digits):
    digits.radio[0].set_value("random").run()
    digits.number_input(key="rand_count").set_value(8)
    digits.number_input(key="rand_seed").set_value(3)
    digits.number_input(key="rand_low").set_value(-1.0)
    digits.number_input(key="rand_high").set_value(1.0).run()
    assert_clean(digits)
    label = "8 random in [-1, 1], seed 3"
    assert f"Samples: {label}" in sidebar_texts(digits)
    digits.button(key="check_samples").click().run()
    assert any(s.startswith("8 samples") for s in texts(digits.success))


def test_uploaded_samples_that_do_not_fit_get_a_clear_message(digits):
    digits.radio[0].set_value("upload").run()
    digits.file_uploader(key="samples_upload").upload("rows.csv", b"1,2,3\n4,5,6\n").run()
    digits.button(key="check_samples").click().run()
    assert_clean(digits)
    errors = texts(digits.error)
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "(2, 3)" in errors[0] and "(?, 8, 8, 1)" in errors[0]


def test_a_zipped_saved_model_is_described(app):
    upload_model(app, "diabetes_regressor_savedmodel.zip")
    assert_clean(app)
    assert metrics(app)["Format"] == "saved_model"
    assert list(app.dataframe[0].value["name"]) == ["features", "output_0"]
    assert (SAMPLES / "diabetes_regressor_savedmodel.zip").stat().st_size > 0


def test_several_uploaded_images_become_the_samples(app):
    use_sample(app, "mobilenet_v2_small")
    app.radio[0].set_value("upload").run()
    folder = SAMPLES / "mobilenet_v2_small.samples"
    uploader = app.file_uploader(key="samples_upload")
    for name in ("china_0.png", "flower_1.png", "flower_2.png"):
        uploader.upload(name, (folder / name).read_bytes(), "image/png")
    app.run()
    app.button(key="check_samples").click().run()
    assert_clean(app)
    assert any(s.startswith("3 samples (3 files.zip)") for s in texts(app.success))


def test_an_upload_left_before_the_model_page_took_it_is_taken_by_the_next_page(app):
    """The file reached the server, but the user switched page before the Model page's run loaded it
    (under load that run is cut short): the next page loads it instead of saying "No model yet"."""
    app.file_uploader(key="model_upload").upload("digits_cnn.keras", (SAMPLES / "digits_cnn.keras").read_bytes())
    app.switch_page("pages/convert.py").run()       # the upload goes with this run; Model never ran
    assert_clean(app)
    assert texts(app.title) == ["Convert"]
    assert app.session_state["lab_model"] is not None and app.session_state["lab_model"].label == "digits_cnn.keras"
    assert not any("No model yet" in t for t in texts(app.info))
    assert "**digits_cnn.keras**" in sidebar_texts(app)
    # A refused file on another page: one line there, and the Model page still shows it.
    app.switch_page("pages/model.py").run()
    app.file_uploader(key="model_upload").upload("model.h5", b"a,b,c\n1,2,3\n")
    app.switch_page("pages/matrix.py").run()
    errors = texts(app.error)
    assert len(errors) == 1 and "model.h5 is CSV text" in errors[0]
    assert app.session_state["lab_model"].label == "digits_cnn.keras"       # nothing the user made is lost


def test_token_model_random_samples_show_ids_from_the_vocabulary_and_a_settable_length(app, tmp_path):
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", (
        "import sys, keras; keras.utils.set_random_seed(0); t = keras.Input((None,), dtype='int32', name='tokens');"
        "h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(300, 4, name='embed')(t));"
        "keras.Model(t, keras.layers.Dense(2, name='score')(h)).save(sys.argv[1])"), str(tmp_path / "tok.keras")],
        check=True, capture_output=True)
    upload_model(app, "tok.keras", (tmp_path / "tok.keras").read_bytes())
    app.radio[0].set_value("random").run()
    app.number_input(key="rand_len_tokens").set_value(9).run()
    assert_clean(app)
    assert "Samples: 64 random, seed 0, tokens length 9" in sidebar_texts(app)
    app.button(key="check_samples").click().run()
    assert_clean(app)
    (drawn,) = [d.value for d in app.dataframe if "values" in d.value.columns]
    assert drawn.to_dict("records") == [{"input": "tokens", "values": "ids 0–299 from Embedding 'embed'", "length": 9}]
    assert any("use length 9 there (as set" in w for w in texts(app.warning))
