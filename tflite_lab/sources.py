"""Stage 1: model bytes -> a ModelSource on disk, with the format detected from the bytes.

Everything here is plain Python (zipfile, h5py, json): it runs before TensorFlow sees a byte, so a
hostile upload is refused before any parser with a large attack surface touches it. Loading the
model into TensorFlow happens in ``models.py``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .config import Limits, cache_dir
from .errors import SourceError, wrapped
from .types import ModelSource, SourceFormat

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
TFLITE_IDENTIFIER = b"TFL3"   # flatbuffer file identifier at bytes 4..8
EXPECTED = "expected a .keras, .h5, zipped SavedModel or .tflite model"

# Layer classes whose saved config can carry Python code or arbitrary callables.
CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
# Layers that load another model from disk when deserialized.
FILE_LAYERS = {"TFSMLayer"}
# Lookup/vectorization layers: a string in these fields is a file Keras would read.
VOCABULARY_LAYERS = {"StringLookup", "IntegerLookup", "TextVectorization"}
VOCABULARY_FIELDS = ("vocabulary", "idf_weights")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^file:", re.ASCII)
# Handles KerasHub resolves to a download (keras_hub.src.utils.preset_utils): refused in any string.
PRESET_SCHEMES = ("kaggle://", "hf://", "modelscope://", "gs://", "http://", "https://")
# The installed package whose registered classes .keras uploads may name (registered_name "keras_hub>X").
KERAS_HUB = "keras_hub"
# KerasHub tokenizer fields: a string here is a file the tokenizer opens when it is built (before
# the archive's assets are loaded). Saved models store them as null and carry the files as assets.
TOKENIZER_ASSET_FIELDS = ("vocabulary", "merges", "proto")
EXPORT_ADVICE = ("export a SavedModel with model.export(DIR), zip the folder and upload that "
                 "(the keras route then does not apply)")
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def describe_bytes(head: bytes) -> str:
    """What a file that is not a model looks like, for the one-line refusal."""
    if not head:
        return "empty"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        return "a compressed archive (gzip/bzip2/xz), not a zip"
    if head[:1] in (b"\x80",) and b"pickle" not in head[:2]:
        return "a Python pickle"
    try:
        text = head[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognized binary data"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    if text.lstrip().startswith(("{", "[")):
        return f"JSON text ('{first}')"
    if "," in first:
        return f"CSV text ('{first}')"
    return f"text ('{first}')"


def _zip_names(data: bytes | str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as zf:
        return zf.namelist()


def _saved_model_root(names: list[str]) -> str | None:
    """Folder inside a zip that holds saved_model.pb: the root, or one top-level folder."""
    for n in names:
        p = PurePosixPath(n)
        if p.name == "saved_model.pb" and len(p.parts) <= 2:
            return str(p.parent) if len(p.parts) == 2 else ""
    return None


def detect_format(data: bytes, filename: str = "model") -> SourceFormat:
    """Tell the format from the bytes alone; the file name only appears in messages.

    Raises:
        SourceError: empty, truncated or unrecognized bytes, or a zip that holds no model.
    """
    name = os.path.basename(filename) or "model"
    head = data[:16]
    if head.startswith(HDF5_MAGIC):
        return SourceFormat.H5
    if len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER:
        return SourceFormat.TFLITE
    if head.startswith(ZIP_MAGICS):
        try:
            names = _zip_names(data)
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise SourceError(wrapped(f"{name} is a truncated or corrupt zip archive (", e, f"); {EXPECTED}.")) from None
        if "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names):
            return SourceFormat.KERAS
        if _saved_model_root(names) is not None:
            return SourceFormat.SAVED_MODEL
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "") or "nothing"
        raise SourceError(f"{name} is a zip archive without a SavedModel (no saved_model.pb at its root "
                          f"or in one top folder; it holds {shown}); {EXPECTED}.")
    raise SourceError(f"{name} is {describe_bytes(data[:512])}, not a model; {EXPECTED}.")


def _check_member(info: zipfile.ZipInfo, dest: Path) -> Path:
    raw = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SourceError(f"Archive entry '{raw}' is a symbolic link; links are refused.")
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":") or "\\" in raw:
        raise SourceError(f"Archive entry '{raw}' has an absolute or Windows path; refused.")
    parts = PurePosixPath(raw).parts
    if ".." in parts:
        raise SourceError(f"Archive entry '{raw}' points outside the archive folder ('..'); refused.")
    target = (dest / raw).resolve()
    if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
        raise SourceError(f"Archive entry '{raw}' resolves outside the archive folder; refused.")
    return target


def check_zip_limits(data: bytes, limits: Limits, name: str = "archive"):
    """Entry count, total size and compression ratio of a zip, from its directory, before any inflate."""
    max_total = int(limits.unzip_total_mb * 2**20)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise SourceError(wrapped(f"{name} is a truncated or corrupt zip archive (", e, ").")) from None
    if len(infos) > limits.unzip_max_entries:
        raise SourceError(f"{name} holds {len(infos)} entries, more than the limit of {limits.unzip_max_entries}.")
    total = sum(i.file_size for i in infos)
    compressed = sum(i.compress_size for i in infos) or 1
    if total > max_total:
        raise SourceError(f"{name} would expand to {total / 2**20:.0f} MB, more than the limit of "
                          f"{limits.unzip_total_mb:.0f} MB; refused (zip bomb?).")
    for i in infos:
        ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size > 2**20 and ratio > limits.unzip_max_ratio:
            raise SourceError(f"{name}: entry '{i.filename}' expands {ratio:.0f}x "
                              f"(limit {limits.unzip_max_ratio:.0f}x); refused (zip bomb?).")
    if total > 2**20 and total / compressed > limits.unzip_max_ratio:
        raise SourceError(f"{name} expands {total / compressed:.0f}x overall "
                          f"(limit {limits.unzip_max_ratio:.0f}x); refused (zip bomb?).")
    return zf, infos


def safe_unzip(data: bytes, dest: Path, limits: Limits, name: str = "archive") -> None:
    """Unpack a zip with every entry checked before anything is written.

    Refuses absolute paths, '..', symlinks, too many entries, too large a total or too high a
    compression ratio (zip bombs); sizes are enforced again while writing, since headers can lie.
    """
    max_total = int(limits.unzip_total_mb * 2**20)
    zf, infos = check_zip_limits(data, limits, name)
    targets = [(_check_member(i, dest), i) for i in infos]
    written = 0
    for target, info in targets:
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_total:
                        raise SourceError(f"{name} expands past {limits.unzip_total_mb:.0f} MB while "
                                          "unpacking (its headers understate the sizes); refused.")
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise SourceError(wrapped(f"{name} is corrupt: entry '{info.filename}' cannot be read (", e, ").")) from None


def read_limited(path: str | Path, limits: Limits) -> bytes:
    p = Path(path)
    size = p.stat().st_size
    if size > limits.upload_mb * 2**20:
        raise SourceError(f"{p.name} is {size / 2**20:.0f} MB, more than the upload limit of {limits.upload_mb:.0f} MB.")
    return p.read_bytes()


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_symlink():
                raise SourceError(f"{f} is a symbolic link inside the SavedModel folder; refused.")
            if f.is_file():
                zi = zipfile.ZipInfo(str(f.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(zi, f.read_bytes())
    return buf.getvalue()


def load_source(data: bytes, filename: str, *, limits: Limits | None = None,
                store: Path | None = None) -> ModelSource:
    """Check the bytes, detect the format and place the model in the content-addressed store.

    The same bytes always land in the same folder, so later stages can cache by ``sha256``.
    """
    limits = limits or Limits.from_env()
    name = os.path.basename(filename) or "model"
    if len(data) > limits.upload_mb * 2**20:
        raise SourceError(f"{name} is {len(data) / 2**20:.0f} MB, more than the upload limit of {limits.upload_mb:.0f} MB.")
    fmt = detect_format(data, name)
    if fmt is SourceFormat.KERAS:   # Keras inflates its own zip: same bomb limits as SavedModel zips
        check_zip_limits(data, limits, name)
        config = _keras_zip_config(data)
        if config is not None:      # code layers and paths refused at once, before a worker starts
            check_keras_config(config, name)   # (the worker checks again, and checks what this cannot)
            check_keras_paths(config, name)
    sha = hashlib.sha256(data).hexdigest()
    root = (store or cache_dir()) / "models" / sha
    filenames = {SourceFormat.KERAS: "model.keras", SourceFormat.H5: "model.h5",
                 SourceFormat.TFLITE: "model.tflite", SourceFormat.SAVED_MODEL: "saved_model"}
    target = root / filenames[fmt]
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
        try:
            if fmt is SourceFormat.SAVED_MODEL:
                safe_unzip(data, tmp / "unpacked", limits, name)
                sub = _saved_model_root([str(p.relative_to(tmp / "unpacked")) for p in (tmp / "unpacked").rglob("saved_model.pb")])
                if sub is None:
                    raise SourceError(f"{name} holds no saved_model.pb after unpacking.")
                os.replace(tmp / "unpacked" / sub, tmp / "ready")
            else:
                (tmp / "ready").write_bytes(data)
            try:
                os.replace(tmp / "ready", target)
            except OSError:
                if not target.exists():   # a concurrent job may have placed the same bytes first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.exists():
                try:
                    root.rmdir()   # a refused upload leaves nothing behind
                except OSError:
                    pass
    return ModelSource(path=str(target), format=fmt, sha256=sha, size_bytes=len(data), filename=name)


def source_from_path(path: str | Path, *, limits: Limits | None = None, store: Path | None = None) -> ModelSource:
    """A model given on the command line: a file, or a SavedModel folder."""
    limits = limits or Limits.from_env()
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p} does not exist.")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise SourceError(f"{p} is a folder without saved_model.pb; {EXPECTED}.")
        data = _zip_folder(p)
        if len(data) > limits.upload_mb * 2**20:
            raise SourceError(f"{p} holds {len(data) / 2**20:.0f} MB, more than the limit of {limits.upload_mb:.0f} MB.")
    else:
        data = read_limited(p, limits)
    return load_source(data, p.name, limits=limits, store=store)


# ---- what a Keras file would deserialize, read without deserializing it ----

def _keras_zip_config(data: bytes) -> dict | None:
    """The config of a .keras zip when it reads as JSON (plain Python: safe in the server), else None
    and the worker reports what is wrong with the file."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            config = json.loads(zf.read("config.json"))
        return config if isinstance(config, dict) else None
    except Exception:  # zipfile/json raise many types on corrupt files
        return None


def read_keras_config(source: ModelSource) -> dict:
    """The model config stored in a .keras or .h5 file, as JSON, without building anything."""
    try:
        if source.format is SourceFormat.KERAS:
            with zipfile.ZipFile(source.path) as zf:
                return json.loads(zf.read("config.json"))
        import h5py
        with h5py.File(source.path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise SourceError(f"{source.filename} is an HDF5 file without a model config "
                                  "(weights only?); save the whole model with model.save().")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except SourceError:
        raise
    except Exception as e:  # h5py/zip/json raise many types on corrupt files
        raise SourceError(f"{source.filename} is a truncated or corrupt {source.format.value} file "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}).") from None


def _path_kind(text: str) -> str | None:
    """'a URL', 'an absolute path' or "a '..' path" when a config string points off the archive."""
    t = text.strip()
    if t.lower().startswith(PRESET_SCHEMES[:4]):
        return "a KerasHub preset handle"
    if _URL.match(t):
        return "a URL"
    if t.startswith(("/", "~")) or _WINDOWS_ABS.match(t):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", t):
        return "a '..' path"
    return None


def check_keras_paths(config: dict, filename: str) -> None:
    """Refuse layers that would read host files or the network when Keras deserializes the config.

    By the stored config alone (nothing is built): TFSMLayer (loads a SavedModel from disk), a
    lookup/vectorization layer whose vocabulary or idf weights are a path, a KerasHub class whose
    tokenizer assets (vocabulary, merges, proto) are a string (a file it would open; saved models
    keep them in the archive's assets), and any config string that is an absolute path, a '..'
    path, a URL or a KerasHub preset handle (kaggle://, hf://, ...: KerasHub would download it).
    Independent of what the installed Keras or KerasHub refuses.
    """
    def walk(node, layer: str, where: str):
        if isinstance(node, dict):
            cls = node.get("class_name")
            cfg = node.get("config")
            if isinstance(cls, str) and isinstance(cfg, dict):
                layer = f"{cls} '{cfg.get('name', cls)}'"
                if cls in FILE_LAYERS:
                    raise SourceError(f"{filename} is refused: layer {layer} loads a model from "
                                      f"'{cfg.get('filepath', '?')}' (field 'filepath'): reads files. "
                                      "Uploads must carry their whole model.")
                if cls in VOCABULARY_LAYERS:
                    for key in VOCABULARY_FIELDS:
                        if isinstance(cfg.get(key), str):
                            raise SourceError(f"{filename} is refused: layer {layer} takes its {key} from the "
                                              f"path '{cfg[key]}' (field '{key}'): reads files. Save the layer "
                                              "with its vocabulary inside the model.")
                if _is_kerashub_node(node):
                    for key in TOKENIZER_ASSET_FIELDS:
                        if isinstance(cfg.get(key), str):
                            raise SourceError(f"{filename} is refused: KerasHub {layer} takes its {key} from "
                                              f"'{cfg[key][:80]}' (field '{key}'), outside the archive: reads "
                                              "files. Save the model with model.save() so its tokenizer "
                                              "assets travel inside the .keras file.")
            for k, v in node.items():
                walk(v, layer, k if isinstance(k, str) else where)
        elif isinstance(node, list):
            for v in node:
                walk(v, layer, where)
        elif isinstance(node, str):
            kind = _path_kind(node)
            if kind == "a KerasHub preset handle":
                raise SourceError(f"{filename} is refused: layer {layer} has a preset handle in field '{where}' "
                                  f"('{node[:80]}'): KerasHub would download it. Configs may not point "
                                  "outside the model file.")
            if kind:
                risk = "network" if kind == "a URL" and not node.strip().startswith("file:") else "reads files"
                raise SourceError(f"{filename} is refused: layer {layer} has {kind} in field '{where}' "
                                  f"('{node[:80]}'): {risk}. Configs may not point outside the model file.")

    walk(config, "(model)", "config")


def check_hdf5_links(h5file, filename: str, member: str = "") -> None:
    """Refuse HDF5 external links, external storage and virtual datasets, without following any.

    ``h5file`` is an open ``h5py.File``; each of these makes HDF5 read another host file when
    Keras reads the weights.
    """
    import h5py
    where = f" ({member})" if member else ""
    found: list[str] = []

    def visit(name: str):
        link = h5file.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            found.append(f"'{name}' is an external link to '{link.filename}:{link.path}'")
            return
        if isinstance(link, h5py.SoftLink):
            return
        obj = h5file.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                sources = sorted({m.file_name for m in obj.virtual_sources()})
                found.append(f"dataset '{name}' is virtual (reads {', '.join(sources[:2])})")
            elif obj.external:
                found.append(f"dataset '{name}' is stored in external file '{obj.external[0][0]}'")

    try:
        h5file.visit_links(visit)
    except SourceError:
        raise
    except Exception as e:  # h5py raises many types on corrupt files
        raise SourceError(f"{filename}{where} is a corrupt HDF5 file ({type(e).__name__}).") from None
    if found:
        raise SourceError(f"{filename}{where} is refused: {'; '.join(found[:2])}: reads files. "
                          "HDF5 files must hold their own data.")


def check_keras_file(source: ModelSource, resolve=None) -> None:
    """Every check on a .keras/.h5 before Keras opens it: HDF5 links, code layers, paths in the config.

    ``resolve`` is given where Keras will load the file (see ``check_keras_config``).
    """
    import h5py
    try:
        if source.format is SourceFormat.KERAS:
            with zipfile.ZipFile(source.path) as zf:
                for name in zf.namelist():
                    if name.endswith(".h5"):
                        with h5py.File(io.BytesIO(zf.read(name)), "r") as f:
                            check_hdf5_links(f, source.filename, name)
        else:
            with h5py.File(source.path, "r") as f:
                check_hdf5_links(f, source.filename)
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(f"{source.filename} is a truncated or corrupt {source.format.value} file "
                          f"({type(e).__name__}).") from None
    config = read_keras_config(source)
    check_keras_config(config, source.filename, resolve)
    check_keras_paths(config, source.filename)


def _lookup_name(node: dict):
    """The name Keras looks up in its registry for a node: a function's config string, else the
    registered name (the class name when the key is absent), as in ``deserialize_keras_object``."""
    if node.get("class_name") == "function":
        return node.get("config") if isinstance(node.get("config"), str) else None
    return node.get("registered_name", node.get("class_name"))


def _is_kerashub_node(node: dict) -> bool:
    """A config node naming a KerasHub class or function: by its module or its registered name."""
    module, name = node.get("module"), _lookup_name(node)
    return ((isinstance(module, str) and (module == KERAS_HUB or module.startswith(KERAS_HUB + ".")))
            or (isinstance(name, str) and name.startswith(KERAS_HUB + ">")))


def _kerashub_problem(node: dict, resolve) -> str | None:
    """Why a node that names KerasHub is not a class of the installed package, or None.

    Keras resolves a node by its registered name first, then imports ``module`` and takes
    ``class_name`` from it; both must land in the installed keras_hub package. Without ``resolve``
    (in the server, where no TensorFlow is imported) only the names are checked.
    """
    cls, module, name = node.get("class_name"), node.get("module"), _lookup_name(node)
    registered = node.get("registered_name")
    if not (isinstance(module, str) and module.startswith(KERAS_HUB + ".")):
        return f"registered as {name} but from module {module}"
    for n in (name, registered):
        if n is not None and not (isinstance(n, str) and (n.startswith(KERAS_HUB + ">") or ">" not in n)):
            return f"module {module} but registered as {n}"
    if resolve is None:
        return None
    return resolve(cls, module, name if isinstance(name, str) and ">" in name else None)


def check_keras_config(config: dict, filename: str, resolve=None) -> None:
    """Refuse configs that would run code when deserialized: Lambda layers and custom objects.

    Keras 3's safe_mode blocks Python lambdas, but a custom class registered by name would import
    and run user code if it were importable; refusing both keeps the guarantee independent of it.
    Classes of the installed KerasHub package (module ``keras_hub.*``, registered ``keras_hub>Name``)
    are allowed: their code is ours, not the upload's. ``resolve(class_name, module, registered_name)``,
    given where Keras will load the file, returns why a node is not really such a class (or None),
    checked against Keras' registry after keras_hub is imported.
    """
    found_code: list[str] = []
    found_custom: list[str] = []

    def walk(node, path: str):
        if isinstance(node, dict):
            cls = node.get("class_name")
            if isinstance(cls, str):
                label = (node.get("config") or {}).get("name", cls) if isinstance(node.get("config"), dict) else cls
                if cls in CODE_LAYERS:
                    found_code.append(f"{cls} '{label}'")
                module = node.get("module")
                registered = node.get("registered_name")
                if _is_kerashub_node(node):
                    problem = _kerashub_problem(node, resolve)
                    if problem:
                        found_custom.append(f"{cls} ({problem})")
                elif isinstance(module, str) and module and not (
                        module in ("keras", "builtins") or module.startswith("keras.")):
                    found_custom.append(f"{cls} (module {module})")
                elif any(isinstance(n, str) and ">" in n for n in (registered, _lookup_name(node))):
                    shown = next(n for n in (registered, _lookup_name(node)) if isinstance(n, str) and ">" in n)
                    found_custom.append(f"{cls} (registered as {shown})")
            for v in node.values():
                walk(v, path)
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    walk(config, "")
    if found_code:
        raise SourceError(f"{filename} contains {', '.join(found_code[:3])}: a layer that stores Python code. "
                          "Code from uploads is never run; rebuild the model without Lambda layers.")
    if found_custom:
        raise SourceError(f"{filename} uses custom objects ({', '.join(found_custom[:3])}) whose code is not "
                          f"part of Keras or KerasHub; they are not loaded from uploads. To convert it, "
                          f"{EXPORT_ADVICE}.")
