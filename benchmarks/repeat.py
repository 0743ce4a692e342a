"""A repeat is instant: the same `convert` (MobileNetV2 0.35, 96², int8, latency on) cold — a fresh
store, so prepared model, conversion and timings are all computed — against the same command again
with everything in the store. Alternating rounds, each cold run in a store of its own.

Then the dashboard (Streamlit's AppTest, in a child process with a store of its own): one session
uploads the model and presses Convert (int8, cold); a second session uploads the same bytes and
presses Convert again; the server time of that script run (the click to the rendered result) is the
reconversion of a stored cell. Target <= 0.5 s; the cold session's Convert run is printed next to it.

    python benchmarks/repeat.py [--rounds 2] [--no-cli]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, build_mobilenet, machine_line, run_checked  # noqa: E402


DASHBOARD = """
import sys, time
from streamlit.testing.v1 import AppTest
app, model = sys.argv[1], sys.argv[2]
data = open(model, "rb").read()
times = []
for session in ("cold", "stored"):
    at = AppTest.from_file(app, default_timeout=600).run()
    at.file_uploader(key="model_upload").upload("mobilenet.keras", data).run()
    at.switch_page("pages/convert.py").run()
    at.radio(key="conv_route").set_value("saved_model")
    at.radio(key="conv_opt").set_value("int8").run()
    t0 = time.perf_counter()
    at.button(key="convert").click().run()
    times.append(time.perf_counter() - t0)
    assert not at.exception, [e.value for e in at.exception]
    heads = [h.value for h in at.subheader]
    stored = any("(from the store)" in h for h in heads)
    assert stored == (session == "stored"), (session, heads)
print(*times)
"""


def dashboard(d: Path, model: Path) -> tuple[float, float]:
    env = {"TFLITE_LAB_CACHE": str(d / "store-dashboard"), "TFLITE_LAB_HOME": str(d / "home-dashboard")}
    _, out = run_checked([sys.executable, "-c", DASHBOARD, str(ROOT / "app.py"), str(model)], env)
    cold, stored = map(float, out.split()[-2:])
    return cold, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-cli", action="store_true", help="only the dashboard part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model = build_mobilenet(d / "mobilenet.keras")
        if not args.no_cli:
            cli(d, model, args.rounds)
        cold, stored = dashboard(d, model)
        print(f"dashboard Convert (int8), cold session: {cold:.2f} s; a second session, the stored cell: "
              f"{stored:.3f} s server time (target <= 0.5 s); {machine_line()}")


def cli(d: Path, model: Path, rounds: int) -> None:
    """The same `convert` cold and again, ``rounds`` times, alternating."""
    cmd = [sys.executable, "-m", "tflite_lab", "convert", str(model), "--optimize", "int8", "--num-samples", "32",
           "--json", "--no-history"]
    cold, warm = [], []
    for i in range(rounds):
        env = {"TFLITE_LAB_CACHE": str(d / f"store{i}"), "TFLITE_LAB_HOME": str(d / "home")}
        t, out = run_checked(cmd, env, ok_codes=(0, 1))
        assert not json.loads(out)["cached"]
        cold.append(t)
        t, out = run_checked(cmd, env, ok_codes=(0, 1))
        assert json.loads(out)["cached"], "the repeat was not served from the store"
        warm.append(t)
        print(f"round {i + 1}: cold {cold[-1]:.2f} s, repeat {warm[-1]:.2f} s", flush=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"convert MobileNetV2 int8, cold (empty store): median {c:.2f} s over {len(cold)}")
    print(f"the same convert again (store-served):    median {w:.2f} s")
    print(f"ratio repeat/cold: {w / c:.3f}x (target <= 0.05x); {machine_line()}")


if __name__ == "__main__":
    main()
