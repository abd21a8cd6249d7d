"""Pickle-free serialization of nested training state: a JSON skeleton plus a safetensors file.

``optimizer.state_dict()``, scheduler and grad-scaler states, RNG states and the like are nested
dicts, lists and tuples of tensors and Python scalars. ``torch.save`` stores them with pickle, and
loading a pickle can run arbitrary code. Here every tensor goes into a safetensors file and
everything else into strict JSON, and loading only ever calls ``json.loads`` and
``safetensors.torch.load_file``: a checkpoint from an untrusted source cannot execute anything.

The round trip is exact, because a resumed run must continue bit for bit:

* every container (``dict``, ``OrderedDict`` with its ``_metadata``, ``list``, ``tuple``) is written
  as an explicit tagged object (``{"t": "dict", "items": [[k, v], ...]}``), so user dict keys can
  never be mistaken for markers, int keys stay ints and tuples stay tuples;
* ``str``, ``bool``, ``None`` and ``int`` are plain JSON values (ints wider than 63 bits are tagged
  hex strings, so other JSON readers do not silently round them); finite floats are plain JSON
  numbers (``repr`` round-trips exactly, ``-0.0`` included); NaN and ±inf are tagged with their
  64 IEEE bits, which keeps NaN payloads and keeps the JSON standard (no ``NaN`` literals);
* tensors keep dtype and shape (0-dim included); values are copied bit for bit; ``nn.Parameter``
  and ``requires_grad`` are restored; numpy arrays and numpy scalars come back as numpy objects
  of the same dtype.

Anything else raises ``TypeError`` naming where it sits, e.g. ``state[3].exp_avg``: silently
dropping or coercing a value would make a resumed run diverge without warning.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "FORMAT",
    "VERSION",
    "TreeFormatError",
    "flatten",
    "load_tree",
    "save_tree",
    "tree_paths",
    "unflatten",
]

FORMAT = "statetrain.tensor_tree"
"""Value of the skeleton's ``format`` field; lets a reader reject an unrelated JSON file."""

VERSION = 1
"""Skeleton layout version; bumped on any incompatible change so old readers refuse new files."""

_MAX_PLAIN_INT_BITS = 63


class TreeFormatError(ValueError):
    """A skeleton or tensor file is not a valid tensor tree (corrupt, tampered with, or mismatched)."""


# --------------------------------------------------------------------------- paths in messages


def _child_path(path: str, key: Any) -> str:
    """``state`` + ``3`` → ``state[3]``; ``state[3]`` + ``"exp_avg"`` → ``state[3].exp_avg``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _show(path: str) -> str:
    return path or "<root>"


# --------------------------------------------------------------------------- flatten


def _float_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


def _float_from_bits(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


class _Flattener:
    """Walks one object, handing each tensor a fresh key in the flat tensor dict."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def _add_tensor(self, tensor: torch.Tensor, path: str) -> str:
        if tensor.layout is not torch.strided:
            raise TypeError(
                f"cannot serialize {tensor.layout} tensor at {_show(path)}: only dense tensors are supported"
            )
        if tensor.is_quantized or tensor.is_meta or tensor.is_nested:
            raise TypeError(f"cannot serialize quantized, meta or nested tensor at {_show(path)}")
        key = str(len(self.tensors))
        self.tensors[key] = self._own_storage(tensor.detach())
        return key

    def _own_storage(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor itself when it alone fills a CPU storage; a copy otherwise.

        safetensors refuses tensors that share storage, and a view of a larger buffer would drag the
        buffer along; everything else (optimizer moments, above all) is written without a copy,
        which is most of a checkpoint's bytes.
        """
        plain = tensor.resolve_conj().resolve_neg()
        if plain.device.type == "cpu" and plain.is_contiguous() and plain.storage_offset() == 0:
            storage = plain.untyped_storage()
            if storage.nbytes() == plain.numel() * plain.element_size() and storage.data_ptr() not in self._storages:
                self._storages.add(storage.data_ptr())
                return plain
        return plain.to("cpu", copy=True).contiguous()

    def key(self, value: Any, path: str) -> Any:
        """Encode a dict key: only hashable scalars and tuples of them, never tensors."""
        if type(value) in (str, int, bool, float) or value is None:
            return self.value(value, path)
        if type(value) is tuple:
            return {"t": "tuple", "items": [self.key(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        raise TypeError(f"cannot serialize dict key of type {type(value).__qualname__} at {_show(path)}")

    def value(self, value: Any, path: str) -> Any:
        kind = type(value)
        if value is None or kind is str or kind is bool:
            return value
        if kind is int:
            if value.bit_length() > _MAX_PLAIN_INT_BITS:
                return {"t": "int", "hex": hex(value)}
            return value
        if kind is float:
            return value if math.isfinite(value) else {"t": "float", "bits": _float_bits(value)}
        if kind is dict or kind is OrderedDict:
            items = []
            for k, v in value.items():
                child = _child_path(path, k)
                items.append([self.key(k, child), self.value(v, child)])
            if kind is dict:
                return {"t": "dict", "items": items}
            node = {"t": "odict", "items": items}
            # nn.Module.state_dict() hangs per-module versions on the OrderedDict; load_state_dict reads them.
            metadata = getattr(value, "_metadata", None)
            if metadata is not None:
                node["metadata"] = self.value(metadata, _child_path(path, "_metadata"))
            return node
        if kind is list or kind is tuple:
            return {
                "t": "list" if kind is list else "tuple",
                "items": [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)],
            }
        if kind is torch.Size:
            return {"t": "size", "items": [int(v) for v in value]}
        if kind is torch.dtype:
            return {"t": "dtype", "name": str(value).removeprefix("torch.")}
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            tensor_node: dict[str, Any] = {
                "t": "tensor",
                "key": self._add_tensor(value, path),
                "dtype": str(value.dtype).removeprefix("torch."),
                "shape": list(value.shape),
            }
            if kind is torch.nn.Parameter:
                tensor_node["parameter"] = True
            if value.requires_grad:
                tensor_node["requires_grad"] = True
            return tensor_node
        if kind is np.ndarray:
            return self._numpy(value, path, "ndarray")
        if isinstance(value, np.generic):
            return self._numpy(np.asarray(value), path, "npscalar")
        raise TypeError(
            f"cannot serialize {kind.__module__}.{kind.__qualname__} at {_show(path)}: supported are dict, "
            "OrderedDict, list, tuple, torch.Size, torch.dtype, torch.Tensor, numpy arrays and scalars, "
            "str, int, float, bool and None"
        )

    def _numpy(self, array: np.ndarray, path: str, tag: str) -> dict[str, Any]:
        dtype = array.dtype
        if dtype.hasobject or dtype.kind not in "biufc":
            raise TypeError(f"cannot serialize numpy {tag} of dtype {dtype} at {_show(path)}")
        native = array.astype(dtype.newbyteorder("="), copy=False)
        try:
            tensor = torch.from_numpy(np.array(native, order="C", copy=True))  # keeps 0-dim, unlike ascontiguousarray
        except TypeError as error:
            raise TypeError(f"cannot serialize numpy {tag} of dtype {dtype} at {_show(path)}: {error}") from None
        return {"t": tag, "key": self._add_tensor(tensor, path), "dtype": dtype.str, "shape": list(array.shape)}


def flatten(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into a JSON-serializable skeleton and a flat ``{key: tensor}`` dict.

    Tensors are detached, copied to CPU and made contiguous, so the result does not alias ``obj``.
    Raises ``TypeError`` naming the path of the first value that cannot be stored exactly.
    """
    flattener = _Flattener()
    root = flattener.value(obj, "")
    return {"format": FORMAT, "version": VERSION, "root": root}, flattener.tensors


# --------------------------------------------------------------------------- unflatten


class _Unflattener:
    """Rebuilds an object from a skeleton, validating every node: the skeleton may be hostile."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        self.tensors = tensors
        self.source = source
        self.used: set[str] = set()

    def fail(self, path: str, message: str) -> TreeFormatError:
        return TreeFormatError(f"{self.source}: {message} at {_show(path)}")

    def _fields(
        self, node: dict[str, Any], path: str, required: set[str], optional: frozenset[str] = frozenset()
    ) -> None:
        keys = set(node)
        if not required <= keys or not keys <= required | optional:
            raise self.fail(path, f"malformed {node.get('t')!r} node with fields {sorted(keys)}")

    def _items(self, node: dict[str, Any], path: str) -> list[Any]:
        self._fields(node, path, {"t", "items"})
        items = node["items"]
        if not isinstance(items, list):
            raise self.fail(path, f"'items' of a {node['t']!r} node must be a list")
        return items

    def value(self, node: Any, path: str) -> Any:
        if node is None or isinstance(node, (str, bool, int)):
            return node
        if isinstance(node, float):
            return node
        if not isinstance(node, dict):
            raise self.fail(path, f"unexpected JSON value of type {type(node).__name__}")
        tag = node.get("t")
        if tag in ("dict", "odict"):
            return self._mapping(node, path, tag)
        if tag == "list":
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(self._items(node, path))]
        if tag == "tuple":
            return tuple(self.value(v, f"{path}[{i}]") for i, v in enumerate(self._items(node, path)))
        if tag == "size":
            items = self._items(node, path)
            if not all(type(v) is int for v in items):
                raise self.fail(path, "torch.Size items must be ints")
            return torch.Size(items)
        if tag == "int":
            self._fields(node, path, {"t", "hex"})
            try:
                return int(node["hex"], 16)
            except (TypeError, ValueError):
                raise self.fail(path, f"bad hex int {node['hex']!r}") from None
        if tag == "float":
            self._fields(node, path, {"t", "bits"})
            bits = node["bits"]
            if not isinstance(bits, str) or len(bits) != 16:
                raise self.fail(path, f"bad float bits {bits!r}")
            try:
                return _float_from_bits(bits)
            except ValueError:
                raise self.fail(path, f"bad float bits {bits!r}") from None
        if tag == "dtype":
            self._fields(node, path, {"t", "name"})
            dtype = getattr(torch, str(node["name"]), None)
            if not isinstance(dtype, torch.dtype):
                raise self.fail(path, f"unknown torch dtype {node['name']!r}")
            return dtype
        if tag == "tensor":
            self._fields(node, path, {"t", "key", "dtype", "shape"}, frozenset({"parameter", "requires_grad"}))
            tensor = self._tensor(node, path, str(node["dtype"]))
            requires_grad = node.get("requires_grad", False) is True
            if requires_grad and not (tensor.is_floating_point() or tensor.is_complex()):
                raise self.fail(path, f"a {tensor.dtype} tensor cannot require grad")
            if node.get("parameter", False) is True:
                return torch.nn.Parameter(tensor, requires_grad=requires_grad)
            return tensor.requires_grad_(requires_grad) if requires_grad else tensor
        if tag in ("ndarray", "npscalar"):
            return self._array(node, path, tag)
        raise self.fail(path, f"unknown marker {tag!r}")

    def _mapping(self, node: dict[str, Any], path: str, tag: str) -> dict[Any, Any]:
        """A ``dict`` or ``OrderedDict`` node (with the metadata module state dicts carry)."""
        if tag == "odict":
            self._fields(node, path, {"t", "items"}, frozenset({"metadata"}))
            items = node["items"]
            if not isinstance(items, list):
                raise self.fail(path, "'items' of an 'odict' node must be a list")
        else:
            items = self._items(node, path)
        result: dict[Any, Any] = {} if tag == "dict" else OrderedDict()
        for pair in items:
            if not isinstance(pair, list) or len(pair) != 2:
                raise self.fail(path, "dict items must be [key, value] pairs")
            key = self.key(pair[0], path)
            result[key] = self.value(pair[1], _child_path(path, key))
        if "metadata" in node:
            metadata = self.value(node["metadata"], _child_path(path, "_metadata"))
            if not isinstance(metadata, dict):
                raise self.fail(path, "OrderedDict metadata must be a dict")
            result._metadata = metadata  # type: ignore[attr-defined]
        return result

    def _array(self, node: dict[str, Any], path: str, tag: str) -> Any:
        """A numpy array or scalar node: plain numeric dtypes only, rebuilt from its tensor."""
        self._fields(node, path, {"t", "key", "dtype", "shape"})
        try:
            dtype = np.dtype(str(node["dtype"]))
        except TypeError:
            raise self.fail(path, f"unknown numpy dtype {node['dtype']!r}") from None
        if dtype.hasobject or dtype.kind not in "biufc":
            raise self.fail(path, f"numpy dtype {dtype} is not allowed")
        tensor = self._tensor(node, path, None)
        try:
            native = tensor.cpu().numpy()
        except (TypeError, RuntimeError):
            raise self.fail(path, f"tensor of dtype {tensor.dtype} cannot become a numpy array") from None
        if native.dtype != dtype.newbyteorder("="):
            raise self.fail(path, f"tensor has dtype {tensor.dtype}, skeleton says numpy {dtype}")
        array = native.astype(dtype, copy=True)
        return array if tag == "ndarray" else array[()]

    def key(self, node: Any, path: str) -> Any:
        """Decode a dict key, allowing only what ``_Flattener.key`` writes (scalars, tuples of them)."""
        if isinstance(node, dict):
            tag = node.get("t")
            if tag == "tuple":
                return tuple(self.key(v, f"{path}[{i}]") for i, v in enumerate(self._items(node, path)))
            if tag not in ("int", "float"):
                raise self.fail(path, f"a {tag!r} node cannot be a dict key")
        elif isinstance(node, list):
            raise self.fail(path, "a JSON list cannot be a dict key")
        return self.value(node, path)

    def _tensor(self, node: dict[str, Any], path: str, dtype: str | None) -> torch.Tensor:
        key = node["key"]
        if not isinstance(key, str) or key not in self.tensors:
            raise self.fail(path, f"skeleton references missing tensor {key!r}")
        tensor = self.tensors[key]
        self.used.add(key)
        if dtype is not None and str(tensor.dtype).removeprefix("torch.") != dtype:
            raise self.fail(path, f"tensor {key!r} has dtype {tensor.dtype}, skeleton says {dtype}")
        if list(tensor.shape) != node["shape"]:
            raise self.fail(path, f"tensor {key!r} has shape {list(tensor.shape)}, skeleton says {node['shape']}")
        return tensor


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor], *, source: str = "skeleton") -> Any:
    """Inverse of :func:`flatten`. Validates the skeleton and that it uses exactly the given tensors.

    ``source`` names the origin in error messages (``load_tree`` passes the file paths).
    Raises :class:`TreeFormatError` on anything :func:`flatten` would not have produced.
    """
    if not isinstance(skeleton, dict) or skeleton.get("format") != FORMAT:
        raise TreeFormatError(f"{source}: not a {FORMAT} skeleton")
    if skeleton.get("version") != VERSION:
        raise TreeFormatError(
            f"{source}: unsupported {FORMAT} version {skeleton.get('version')!r} (expected {VERSION})"
        )
    if set(skeleton) != {"format", "version", "root"}:
        raise TreeFormatError(f"{source}: unexpected top-level fields {sorted(skeleton)}")
    builder = _Unflattener(tensors, source)
    result = builder.value(skeleton["root"], "")
    unused = sorted(set(tensors) - builder.used)
    if unused:
        raise TreeFormatError(f"{source}: tensors {unused[:5]} are not referenced by the skeleton")
    return result


def tree_paths(directory: Path | str, name: str) -> tuple[Path, Path]:
    """The ``(<name>.json, <name>.safetensors)`` pair that :func:`save_tree` writes."""
    if not name or name in (".", "..") or Path(name).name != name or os.sep in name or "/" in name:
        raise ValueError(f"tree name must be a plain file name, got {name!r}")
    directory = Path(directory)
    return directory / f"{name}.json", directory / f"{name}.safetensors"


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file + rename so a crash never leaves a half-written checkpoint file."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tree(obj: Any, directory: Path | str, name: str) -> list[Path]:
    """Write ``obj`` as ``<name>.json`` + ``<name>.safetensors`` in ``directory``; return both paths.

    Both files are always written (the tensor file may be empty) so a reader never has to guess.
    """
    json_path, tensor_path = tree_paths(directory, name)
    skeleton, tensors = flatten(obj)
    text = json.dumps(skeleton, allow_nan=False, ensure_ascii=True, separators=(",", ":"))
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def write_tensors(tmp: str) -> None:
        save_file(tensors, tmp, metadata={"format": FORMAT, "version": str(VERSION)})

    def write_json(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    _atomic_write(tensor_path, write_tensors)
    _atomic_write(json_path, write_json)
    return [json_path, tensor_path]


def load_tree(directory: Path | str, name: str, map_location: str | torch.device = "cpu") -> Any:
    """Read what :func:`save_tree` wrote, moving tensors to ``map_location``. Never executes code.

    Raises ``FileNotFoundError`` for a missing file and :class:`TreeFormatError` (naming the file)
    for malformed JSON, an invalid safetensors file, or a skeleton that does not match the tensors.
    """
    json_path, tensor_path = tree_paths(directory, name)
    if not json_path.is_file():
        raise FileNotFoundError(f"tensor tree skeleton not found: {json_path}")
    if not tensor_path.is_file():
        raise FileNotFoundError(f"tensor tree tensors not found: {tensor_path}")
    try:
        skeleton = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise TreeFormatError(f"{json_path}: not valid JSON ({type(error).__name__}: {error})") from None
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError, not a stdlib type
        raise TreeFormatError(
            f"{tensor_path}: not a valid safetensors file ({type(error).__name__}: {error})"
        ) from None
    device = torch.device(map_location)
    if device.type != "cpu":
        tensors = {key: tensor.to(device) for key, tensor in tensors.items()}
    try:
        return unflatten(skeleton, tensors, source=f"{json_path} (+ {tensor_path.name})")
    except RecursionError:
        raise TreeFormatError(f"{json_path}: skeleton nested too deeply") from None


def tensor_identity(tensor: torch.Tensor) -> tuple[int, torch.dtype, tuple[int, ...], tuple[int, ...]]:
    """Equal for the same tensor under several names (tied weights): its memory, dtype, shape and strides."""
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
