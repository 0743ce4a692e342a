"""The .tflite op graph as Graphviz DOT, coloured by per-layer error (the Debug page draws it with
``st.graphviz_chart``, which renders in the browser). Large graphs stay readable: runs of
unremarkable ops are collapsed into one node, and the worst layers are always drawn.
"""
from __future__ import annotations

import math

GOOD, WARN, BAD, NONE = "#a5d6a7", "#fff59d", "#ef9a9a", "#eeeeee"


def _colour(v, bounds: tuple[float, float]) -> str:
    if v is None:
        return NONE
    v = float(v)
    if math.isnan(v) or v > bounds[1]:
        return BAD
    return WARN if v > bounds[0] else GOOD


def _label(text: str, width: int = 28) -> str:
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return text if len(text) <= width else "…" + text[-(width - 1):]


def graph_dot(graph: list[dict], layers: list[dict], metric: str, bounds: tuple[float, float],
              max_nodes: int = 40, keep_worst: int = 8) -> tuple[str, int]:
    """(DOT source, how many ops were collapsed). Nodes are the ops of the float model; each shows
    its op type, its output tensor (tail) and the metric; dashed = float in the quantized model."""
    by_tensor = {r["tensor"]: r for r in layers}
    ops = []
    for o in graph:
        name = o["outputs"][0] if o["outputs"] else str(o["index"])
        r = by_tensor.get(name, {})
        ops.append({"id": f"op{o['index']}", "op": o["op"], "tensor": name, "inputs": o["inputs"],
                    "outputs": o["outputs"], "value": r.get(metric), "quantized": r.get("dtype") not in (None, "—", "float32")
                    or (r.get("weights") or "") in ("int8", "int16", "int4")})
    ranked = sorted((o for o in ops if o["value"] is not None),
                    key=lambda o: -(math.inf if math.isnan(float(o["value"])) else float(o["value"])))
    worst = {o["id"] for o in ranked[:keep_worst]}
    remarkable = {o["id"] for o in ops if o["id"] in worst or _colour(o["value"], bounds) != GOOD}
    group_of, nodes, collapsed = {}, [], 0
    if len(ops) <= max_nodes:
        for o in ops:
            group_of[o["id"]] = o["id"]
            nodes.append((o["id"], o))
    else:
        run: list[dict] = []

        def flush():
            nonlocal collapsed
            if not run:
                return
            gid = f"g{run[0]['id']}"
            for o in run:
                group_of[o["id"]] = gid
            nodes.append((gid, {"op": f"{len(run)} ops", "tensor": f"{run[0]['op']} … {run[-1]['op']}",
                                "value": None, "quantized": True, "group": len(run)}))
            collapsed += len(run) if len(run) > 1 else 0
            run.clear()
        for o in ops:
            if o["id"] in remarkable:
                flush()
                group_of[o["id"]] = o["id"]
                nodes.append((o["id"], o))
            else:
                run.append(o)
        flush()
    producer = {t: o["id"] for o in ops for t in o["outputs"]}
    lines = ["digraph G {", "rankdir=TB;", 'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for gid, o in nodes:
        v = o.get("value")
        vtext = "" if v is None else f"\\n{metric} {float(v):.3g}"
        style = '"rounded,filled"' if o.get("quantized") else '"rounded,filled,dashed"'
        kind = "" if o.get("quantized") else "\\n(float)"
        lines.append(f'{gid} [label="{_label(o["op"])}\\n{_label(o["tensor"])}{vtext}{kind}", '
                     f'fillcolor="{_colour(v, bounds) if not o.get("group") else NONE}", style={style}];')
    edges = set()
    for o in ops:
        for t in o["inputs"]:
            if t in producer:
                a, b = group_of[producer[t]], group_of[o["id"]]
                if a != b:
                    edges.add((a, b))
    lines += [f"{a} -> {b};" for a, b in sorted(edges)]
    lines.append("}")
    return "\n".join(lines), collapsed
