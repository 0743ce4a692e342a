"""What a SavedModel graph may do, decided from its protobuf before TensorFlow runs any of it.

The rule is an allowlist: every op that loading or serving the model can reach must be in
``op_allowlist.ALLOWED_OPS`` (ops TFLite's converter lowers to builtins, plus the structural and
variable ops an export needs). Anything else is refused with the op names and what they risk.

Reachability follows every function-valued attribute (``f``, ``body``, ``cond``,
``then_branch``/``else_branch``, ``branches``, any ``func`` or ``list(func)``), function calls
by op name, and the functions the object graph would restore at load time. Checkpoint ops are
allowed only in functions that nothing but the ``saver_def`` reaches (the loader's own
save/restore, which TFLite Lab never runs); anywhere else they read or write host files.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SourceError
from .op_allowlist import ALLOWED_OPS, CHECKPOINT_OPS, RISKS

NO_BUILTIN = "no TFLite builtin kernel; it would also need Flex, which LiteRT here cannot run"


@dataclass
class GraphReport:
    """Ops reached, by op name -> where (first path found), and the refused ones."""

    reached: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)    # op -> risk
    signatures: dict[str, dict] = field(default_factory=dict)   # key -> inputs/outputs -> name -> (dtype enum, shape)
    params: int = 0                                               # elements in the object graph's variables

    def message(self, filename: str) -> str:
        by_risk: dict[str, list[str]] = {}
        for op, risk in sorted(self.refused.items()):
            by_risk.setdefault(risk, []).append(op)
        # file/network/process risks first: they are why the rule exists
        order = sorted(by_risk, key=lambda r: (r == NO_BUILTIN, r))
        parts = []
        for risk in order:
            ops = by_risk[risk]
            shown = ", ".join(f"{op} ({self.reached[op].split(' -> ')[-1]})" for op in ops[:3])
            parts.append(f"{shown}{' ...' if len(ops) > 3 else ''}: {risk}")
        return (f"{filename} is refused before anything runs: its graph uses " + "; ".join(parts)
                + ". Only ops that TFLite lowers to builtin kernels are accepted.")


def _func_attrs(attr_map):
    """(attr name, function name) for every function an attribute map names, at any depth."""
    for key, value in attr_map.items():
        kind = value.WhichOneof("value")
        if kind == "func":
            yield key, value.func.name
            yield from _func_attrs(value.func.attr)
        elif kind == "list":
            for f in value.list.func:
                yield key, f.name
                yield from _func_attrs(f.attr)


def _node_edges(node, library: dict) -> list[tuple[str, str]]:
    """(how, function) for each function a node calls; ``how`` names the op and attribute."""
    calls = [(f"{node.op} {key}", f) for key, f in _func_attrs(node.attr)]
    if node.op in library:            # a function called directly as an op
        calls.append(("call", node.op))
    return calls


def _src(t: str) -> str:
    return t.split(":")[0].lstrip("^")


# Which inputs of a checkpoint op name files, and how a saver may build a path from its file name.
_PATH_INPUTS = {"SaveV2": [0], "RestoreV2": [0], "Save": [0], "SaveSlices": [0], "Restore": [0],
                "RestoreSlice": [0], "MergeV2Checkpoints": [0, 1]}
_PATH_PASS = {"Identity": [0], "Snapshot": [0], "ShardedFilename": [0], "StringJoin": [0], "Select": [1, 2],
              "Pack": None}


def _safe_suffix(name: str, nodes) -> bool:
    """A constant suffix (or a Select of two, as TF1's Saver picks its temp name) without '..'."""
    c = nodes.get(name)
    if c is not None and c.op == "Select":
        data = [i for i in c.input if not i.startswith("^")]
        return len(data) == 3 and all(_safe_suffix(_src(i), nodes) for i in data[1:])
    return (c is not None and c.op == "Const"
            and not any(b".." in v or b"://" in v for v in c.attr["value"].tensor.string_val))


def _check_saver_paths(mg, nodes, saver_nodes, report) -> None:
    """A TF1 load runs the saver's restore with its filename tensor fed: every checkpoint path in the
    saver must start from that tensor (joined only with constant suffixes holding no '..')."""
    filename = _src(mg.saver_def.filename_tensor_name)
    for name in sorted(saver_nodes):
        node = nodes[name]
        if node.op not in _PATH_INPUTS:
            continue
        todo = deque(_src(node.input[i]) for i in _PATH_INPUTS[node.op] if i < len(node.input))
        seen, bad = set(), None
        while todo and bad is None:
            n = todo.popleft()
            if n in seen:
                continue
            seen.add(n)
            if n == filename:
                continue
            cur = nodes.get(n)
            if cur is None or cur.op not in _PATH_PASS:
                bad = n
                break
            data = [i for i in cur.input if not i.startswith("^")]
            if cur.op == "StringJoin":
                for extra in data[1:]:
                    if not _safe_suffix(_src(extra), nodes):
                        bad = _src(extra)
            idx = _PATH_PASS[cur.op]
            todo.extend(_src(data[i]) for i in (range(len(data)) if idx is None else idx) if i < len(data))
        if bad is not None:
            report.refused[node.op] = RISKS.get(node.op, "reads files")
            report.reached[node.op] = (f"saver node '{name}', its path from '{bad}', "
                                       "not the file name the loader passes")


def parse_saved_model(path: str | Path, filename: str = "saved_model.pb"):
    """The SavedModel protobuf, parsed (no graph is built, nothing runs)."""
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(Path(path, "saved_model.pb").read_bytes())
    except Exception as e:
        raise SourceError(f"{filename}: saved_model.pb is corrupt or truncated ({type(e).__name__}).") from None
    if not sm.meta_graphs:
        raise SourceError(f"{filename}: saved_model.pb holds no MetaGraph.")
    return sm


def check_graph(sm) -> GraphReport:
    """Walk every op that loading or serving can reach; return what was reached and refused."""
    report = GraphReport()
    for mg in sm.meta_graphs:
        library = {f.signature.name: f for f in mg.graph_def.library.function}
        nodes = {n.name: n for n in mg.graph_def.node}
        saver_roots = {t.split(":")[0].lstrip("^") for t in (mg.saver_def.save_tensor_name,
                                                            mg.saver_def.restore_op_name) if t}
        def feeding(roots) -> set[str]:
            """Graph nodes that ``roots`` depend on (data and control inputs), roots included."""
            seen, todo = set(), deque(r for r in roots if r in nodes)
            while todo:
                n = todo.popleft()
                if n in seen:
                    continue
                seen.add(n)
                todo.extend(i.split(":")[0].lstrip("^") for i in nodes[n].input if i.split(":")[0].lstrip("^") in nodes)
            return seen

        # The saver's own nodes, minus anything a signature (TF1-style serving by tensor names) uses:
        # pointing saver_def at the serving path must not make its checkpoint ops allowed.
        served_tensors = {t.name.split(":")[0].lstrip("^") for sig in mg.signature_def.values()
                          for t in list(sig.inputs.values()) + list(sig.outputs.values())}
        saver_nodes = feeding(saver_roots) - feeding(served_tensors)
        # TensorFlow loads a SavedModel as TF1 unless it is one MetaGraph with an object graph; then
        # the saver's restore runs at load, so its checkpoint paths must be the loader-fed filename.
        tf1 = not (len(sm.meta_graphs) == 1 and mg.HasField("object_graph_def"))
        if tf1:
            _check_saver_paths(mg, nodes, saver_nodes, report)

        def closure(start_nodes, start_funcs, where):
            """Functions reachable from graph nodes and functions, with the path to each."""
            seen: dict[str, str] = {}
            todo = deque()
            for n in start_nodes:
                for how, f in _node_edges(n, library):
                    todo.append((f, f"{where} node '{n.name}' -> {how} '{f}'"))
            for f, path in start_funcs:
                todo.append((f, path))
            while todo:
                f, path = todo.popleft()
                if f in seen:
                    continue
                seen[f] = path
                if f not in library:
                    continue
                for n in library[f].node_def:
                    for how, g in _node_edges(n, library):
                        todo.append((g, f"{path} -> {how} '{g}'"))
            return seen

        saver_funcs = closure([nodes[n] for n in saver_nodes], [], "saver")
        # Everything else: other graph nodes, every function the object graph restores at load
        # time, and every library function the saver does not own (a superset of the served ones).
        load_funcs, seen_vars = [], set()
        for obj in mg.object_graph_def.nodes:
            kind = obj.WhichOneof("kind")
            if kind == "function":
                load_funcs += [(c, f"function '{c}'") for c in obj.function.concrete_functions]
            elif kind == "bare_concrete_function":
                c = obj.bare_concrete_function.concrete_function_name
                load_funcs.append((c, f"function '{c}'"))
            elif kind == "variable" and obj.variable.name not in seen_vars:
                seen_vars.add(obj.variable.name)   # one variable can appear under several objects
                n = 1
                for d in obj.variable.shape.dim:
                    n *= max(int(d.size), 0)
                report.params += n
        for key, sig in mg.signature_def.items():
            report.signatures[key] = {
                part: {k: (v.dtype, None if v.tensor_shape.unknown_rank else [d.size for d in v.tensor_shape.dim])
                       for k, v in getattr(sig, part).items()}
                for part in ("inputs", "outputs")}
        served_funcs = closure([n for n in nodes.values() if n.name not in saver_nodes], load_funcs, "graph")
        others = [(f, f"function '{f}'") for f in library if f not in saver_funcs and f not in served_funcs]
        served_funcs.update({f: p for f, p in closure([], others, "").items() if f not in served_funcs})
        # TF1 savers use no functions: in a TF1 load, a checkpoint op in a function is not the loader's.
        saver_only = set() if tf1 else set(saver_funcs) - set(served_funcs)

        def visit(op: str, where: str, in_saver: bool):
            if op in library:
                return
            report.reached.setdefault(op, where)
            if op in ALLOWED_OPS or (in_saver and op in CHECKPOINT_OPS):
                return
            report.refused[op] = RISKS.get(op, NO_BUILTIN)
            report.reached[op] = where

        for n in nodes.values():
            visit(n.op, f"graph node '{n.name}'", n.name in saver_nodes)
        for f, path in list(served_funcs.items()) + [(f, saver_funcs[f]) for f in saver_only]:
            if f not in library:
                report.refused[f"function {f}"] = "it names a function the file does not define"
                report.reached[f"function {f}"] = path
                continue
            for n in library[f].node_def:
                visit(n.op, path, f in saver_only)
    return report


def check_saved_model(path: str | Path, filename: str) -> GraphReport:
    """Parse and check a SavedModel folder; refuse it (SourceError) unless every op is allowed."""
    report = check_graph(parse_saved_model(path, filename))
    if report.refused:
        raise SourceError(report.message(filename), detail="\n".join(
            f"{op}: {risk} (reached via {report.reached[op]})" for op, risk in sorted(report.refused.items())))
    return report
