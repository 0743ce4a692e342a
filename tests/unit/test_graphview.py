"""The Debug page's graph: coloured by error, float ops told apart, large graphs collapsed around the worst layers."""
from __future__ import annotations

from tflite_lab.graphview import BAD, GOOD, graph_dot


def _chain(n: int, bad: int):
    graph = [{"index": i, "op": "CONV_2D", "inputs": [f"t{i - 1}"] if i else ["input"], "outputs": [f"t{i}"]}
             for i in range(n)]
    layers = [{"tensor": f"t{i}", "dtype": "float32" if i == 3 else "int8", "weights": None,
               "rmse_per_scale": 9.0 if i == bad else 0.3} for i in range(n)]
    return graph, layers


def test_small_graph_every_op_coloured_and_float_dashed():
    graph, layers = _chain(6, bad=4)
    dot, collapsed = graph_dot(graph, layers, "rmse_per_scale", (0.35, 1.0))
    assert collapsed == 0 and dot.count("label=") == 6 and dot.count("->") == 5
    assert f'fillcolor="{BAD}"' in dot.split("op4 [", 1)[1].split("\n", 1)[0]        # the bad layer is red
    assert dot.count(f'fillcolor="{GOOD}"') == 5
    assert dot.count("dashed") == 1 and "(float)" in dot          # t3 is float in the quantized model


def test_large_graph_keeps_the_worst_and_collapses_the_rest():
    graph, layers = _chain(200, bad=150)
    dot, collapsed = graph_dot(graph, layers, "rmse_per_scale", (0.35, 1.0), max_nodes=40, keep_worst=1)
    nodes = dot.count("label=")
    assert nodes < 10 and collapsed >= 190
    assert "op150 [" in dot and "t150" in dot and BAD in dot       # the worst layer is drawn, red
    assert "ops\\n" in dot                                          # runs shown as 'N ops'
