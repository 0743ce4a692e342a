"""'Run on this device': the cell's batch-1 model in LiteRT.js in the visitor's own browser (a
Streamlit custom component), judged on the server like any cell and kept in the history (kind
``device``, pointing at the cell's run). Used by Deploy and Compare."""
from __future__ import annotations

import io

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from pages import auth, jobs, runs, state
from tflite_lab.errors import TFLiteLabError
from tflite_lab.history import device_label
from tflite_lab.targets.web_assets import assets_dir, available, missing_message

_component = components.declare_component("litertjs_device", path=str(assets_dir())) if available() else None


def component():
    """The LiteRT.js component (None when web/node_modules is missing)."""
    return _component


def _signature() -> dict:
    m = state.model()
    return m.signature if m else {"inputs": [], "outputs": []}


def qr_png(url: str) -> bytes:
    import segno
    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="png", scale=6, border=2)
    return buf.getvalue()


def device_permalink(run_id: str) -> str:
    return runs.permalink([run_id]) + "&device=1"


def _lan_address() -> str | None:
    """This machine's address on its network (a UDP connect sends nothing), None when offline."""
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def phone_link(run_id: str) -> tuple[str, str | None]:
    """The device permalink a phone can open, and a note when this page was reached on loopback."""
    from urllib.parse import urlsplit, urlunsplit
    url = device_permalink(run_id)
    parts = urlsplit(url)
    if parts.hostname not in ("localhost", "::1") and not (parts.hostname or "").startswith("127."):
        return url, None
    bound = st.get_option("server.address")
    lan = _lan_address()
    if lan and bound in (None, "", "0.0.0.0", lan):
        netloc = lan + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc)), (
            f"This page was opened on loopback; the code points at this machine's network address {lan} "
            "(the phone must be on the same network).")
    return url, ("This page was opened on loopback and the server does not listen on the network, so a phone "
                 "cannot open this link: start it with `--server.address 0.0.0.0` and open it by its address.")


def panel(cell: str, key: str) -> None:
    """The device panel of one cell: refusal, or the component, the judged result and the devices so far."""
    ss = st.session_state
    if _component is None:
        st.error(missing_message(), icon=":material/block:")
        return
    report = state.reports().get(cell)
    if report is None:
        return
    run_id = ss.get("lab_run_ids", {}).get(cell)
    served = ss.setdefault("lab_device_cells", {})
    info = served.get(cell)
    if info is None or info.get("tflite_path") != report["tflite_path"]:
        try:
            info = {**jobs.run_job("device_cell", report=report, signature=_signature()),
                    "tflite_path": report["tflite_path"]}
        except TFLiteLabError as e:
            state.show_error(e)
            return
        served[cell] = info
    if info["refusal"]:
        st.warning(info["refusal"], icon=":material/block:")
        if report.get("int8_io") and report.get("route"):
            _offer_float_io(cell, report, key)
        return
    auto = ss.get("device_autostart") == run_id and run_id is not None
    token = f"{cell}:{info['cell_dir'][-24:]}"
    value = _component(cell=info["served"], token=token, autostart=auto, key=f"{key}_component", default=None,
                       hint=f"{info['invocations']} samples, batch-1 model of {info['model_bytes']:,} bytes"
                            + (" (made batch 1: LiteRT.js refuses a dynamic batch)" if info["made_batch_1"] else ""))
    if auto:
        ss["device_autostart"] = None
    done = ss.setdefault("lab_device_results", {})
    if value and value.get("token") == token and value.get("result_id") not in done:
        with st.spinner("Judging the device's outputs…"):
            try:
                t = jobs.run_job("judge_device", report=report, cell_dir=info["cell_dir"], raw=value,
                                   tolerances=state.tolerances_for(cell, report).to_json())
            except TFLiteLabError as e:
                state.show_error(e)
                return
        t["run_id"] = _record(cell, report, t, run_id)
        done[value["result_id"]] = {"cell": cell, **t}
    mine = [r for r in done.values() if r["cell"] == cell]
    if mine:
        show_result(mine[-1], report)
    if run_id:
        devices_table(run_id, report)
        with st.popover("Open on your phone", icon=":material/qr_code_2:", key=f"{key}_qr"):
            url, note = phone_link(run_id)
            st.image(qr_png(url), width=220)
            st.code(url, language=None)
            st.caption("Opens this cell's device panel and starts the run on the device that opens it."
                       + (f" {note}" if note else ""))


def _offer_float_io(cell: str, report: dict, key: str) -> None:
    """The same recipe with float I/O runs in LiteRT.js: switch to it, or convert it here."""
    alt = jobs.cell_id(report["route"], report["optimization"], False)
    ss = st.session_state
    have = alt in state.reports()
    st.caption(f"The float-I/O cell **{alt}** (same recipe, float inputs and outputs) runs in LiteRT.js.")
    if not st.button(f"Switch to {alt}" if have else f"Convert {alt} and use it", key=f"{key}_float_io",
                     icon=":material/swap_horiz:"):
        return
    if not have:
        with st.status(f"Converting {alt}…", expanded=True) as status:
            log = jobs.StepLog(status, alt)
            try:
                prepared = jobs.ensure_prepared(log, alone=state.original() is None)
                jobs.run_cell(report["route"], report["optimization"], False, prepared, log)
                log.done(f"{alt} converted")
            except TFLiteLabError as e:
                log.failed(f"{alt} failed")
                state.show_error(e)
                return
    ss["lab_selected"] = ss["_deploy_pick"] = alt      # the pickers follow on the rerun
    st.rerun()


def _record(cell: str, report: dict, t: dict, parent: str | None) -> str | None:
    from tflite_lab.errors import HistoryError
    from tflite_lab.history import record_run
    prepared = {"source": report.get("source") or {}, "samples_path": report["samples_path"],
                "reference_path": report.get("reference_path"), "signature": _signature(),
                "samples_sha": None, "num_samples": report.get("num_samples")}
    try:
        return record_run("device", [state.judged(cell)], prepared, origin="dashboard", parent_run=parent,
                          extra={"device": {k: v for k, v in t.items() if k != "cell_dir"}},
                          author=auth.author())
    except HistoryError as e:
        st.warning(f"Not recorded in the run history: {e.user_message}", icon=":material/history:")
        return None


def show_result(t: dict, report: dict | None, where: str = "on this device") -> None:
    c = st.columns(4)
    c[0].metric(f"Verdict {where}", str(t.get("verdict") or "-").upper())
    lat = t.get("latency_ms") or {}
    c[1].metric("Latency (median)", f"{lat['median']:.3g} ms" if lat.get("median") is not None else "–",
                help=f"p90 {lat.get('p90') or 0:.3g} ms; {lat.get('what', '')}; {lat.get('runs')} timings")
    c[2].metric("Accelerator", f"{t.get('accelerator') or '–'}", help=t.get("wasm_build"))
    c[3].metric("Device", device_label(t), help=f"{t.get('user_agent')}; {t.get('platform')}, "
                                              f"{t.get('hardware_concurrency')} logical cores")
    if t.get("error"):
        st.error(t["error"], icon=":material/block:")
    for f in t.get("failures") or []:
        st.caption(f":red[{f}]")
    if t.get("outputs"):
        st.dataframe(pd.DataFrame([{"output": o["name"], "max abs error": o.get("max_abs_error"),
                                    "psnr dB": o.get("psnr_db"), "top-1": o.get("top1_agreement"),
                                    "checks": "; ".join(f"{c['metric']} {'ok' if c['ok'] else 'FAIL'}"
                                                        for c in o.get("checks", []))} for o in t["outputs"]],
                                  dtype=object), hide_index=True, placeholder="NaN")
    if t.get("vs_litert"):
        st.dataframe(pd.DataFrame([{"output": v["name"], "max |browser − server LiteRT|": v["max_abs_diff"],
                                    "bit-exact": v.get("bit_exact_fraction")} for v in t["vs_litert"]],
                                  dtype=object), hide_index=True)


def devices_table(run_id: str, report: dict) -> None:
    """Every device this cell's run has run on, next to the server's LiteRT."""
    from tflite_lab.errors import HistoryError
    try:
        with runs.history() as h:
            devices = h.devices(run_id)
    except HistoryError:
        return
    if not devices:
        return
    rows = [{"where": device_label(d["device"] or {}), "accelerator": (d["device"] or {}).get("accelerator"),
             "latency ms (median)": ((d["device"] or {}).get("latency_ms") or {}).get("median"),
             "verdict": str(d["verdict"]).upper(), "run": d["id"]} for d in devices]
    server = ((report.get("latency") or {}).get("tflite") or {})
    rows.append({"where": "server / LiteRT", "accelerator": f"CPU, {server['threads']} threads" if server.get("threads") else "CPU",
                 "latency ms (median)": server.get("median_ms"), "verdict": str(report.get("verdict", "")).upper(),
                 "run": run_id})
    st.markdown("**Devices this cell ran on**")
    st.dataframe(pd.DataFrame(rows, dtype=object), hide_index=True, placeholder="–")
