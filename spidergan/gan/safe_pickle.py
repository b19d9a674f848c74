"""Read network pickles without running them: the restricted unpickler behind
`spidergan import-checkpoint` (nvidia_import.py converts what it reads).

Safety. Such a pickle embeds Python source: each network object is rebuilt through
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, whose `meta['module_src']` (the
text of NVIDIA's training/networks.py) is exec'd by a normal `pickle.load`, and any pickle can
name any callable. `RestrictedUnpickler` resolves only the globals in `_ALLOWED`:

* the persistence and EasyDict/Network globals become plain records (`PersistentObject`,
  `EasyDict`, `TFNetwork`): names, attributes and tensors; `module_src` is kept as text (only
  its sha256 is reported) and never compiled or executed;
* tensors are rebuilt from storages, and storages from their embedded legacy torch.save blobs
  with `torch.load(weights_only=True)`;
* numpy scalars and arrays are rebuilt from their raw bytes (object dtypes refused).

Anything else (os.system, builtins.eval, unknown classes, persistent ids) raises
`UnsafePickleError` naming the refused global before anything is called.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

SOURCE_URLS = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/",
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/",
)


class UnsafePickleError(ValueError):
    """The pickle asks for something the restricted loader does not allow; nothing was run."""


class NotImportable(ValueError):
    """The pickle was read safely but does not describe networks we can import."""


# --------------------------------------------------------------------------- records
class PersistentObject:
    """What `_reconstruct_persistent_obj(meta)` would have built, as data: the class name, the
    object's attribute dict (`state`) and the sha256 of the embedded source (never run)."""

    def __init__(self, meta):
        if not isinstance(meta, dict):
            raise UnsafePickleError("persistent object without a meta dict")
        self.type = meta.get("type")
        self.version = meta.get("version")
        self.class_name = meta.get("class_name")
        src = meta.get("module_src")
        self.module_src_sha256 = (hashlib.sha256(src.encode("utf-8", "replace")).hexdigest()
                                  if isinstance(src, str) else None)
        state = meta.get("state")
        self.state = dict(state) if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class EasyDict(dict):
    """Stand-in for dnnlib's EasyDict (a dict with attribute access): a plain dict here."""


class TFNetwork:
    """Stand-in for dnnlib.tflib.network.Network (TF pickles): keeps the pickled state dict."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError("TF Network state is not a dict")
        self.state = dict(state)


class _NdarrayRecord:
    """numpy's `_reconstruct` + `__setstate__`, rebuilt from raw bytes without object dtypes."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError("unexpected numpy array state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError("numpy arrays of Python objects are refused")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError("numpy array data is not raw bytes")
        shape = tuple(int(s) for s in shape)
        a = np.frombuffer(bytes(raw), dtype=dtype, count=int(np.prod(shape)))
        self.array = a.reshape(shape, order="F" if fortran else "C").copy()


class _NdarrayType:
    """The `numpy.ndarray` class argument of `_reconstruct`; only a marker here."""


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not _NdarrayType:
        raise UnsafePickleError("numpy _reconstruct of something other than ndarray")
    return _NdarrayRecord()


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise UnsafePickleError("numpy dtype from a non-string spec")
    return np.dtype(spec)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("numpy scalars of Python objects are refused")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise UnsafePickleError("numpy scalar data is not raw bytes of the dtype's size")
    return np.frombuffer(bytes(data), dtype=dtype)[0].item()


def _load_storage(blob):
    """A storage from its legacy torch.save bytes, loaded the safe way."""
    if not isinstance(blob, (bytes, bytearray)):
        raise UnsafePickleError("storage payload is not bytes")
    try:
        obj = torch.load(io.BytesIO(bytes(blob)), weights_only=True, map_location="cpu")
    except Exception as e:  # torch's weights-only unpickler refuses code, like ours
        raise UnsafePickleError(f"storage payload refused by torch's weights-only loader: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"storage payload holds a {type(obj).__name__}, not a storage")
    return obj


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError("tensor without a storage")
    return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("parameter without tensor data")
    return data  # a plain tensor is all an import needs


def _reconstructor(cls, base, state=None):
    """copyreg._reconstructor (protocol 0/1 pickles), only for the stand-in classes."""
    if cls not in (EasyDict, TFNetwork, collections.OrderedDict) or base not in (object, dict):
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r}")
    return cls.__new__(cls)


_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals (and torch dtypes); everything else is refused."""

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: network pickles are read without running "
            f"any code from the file, and only tensors, numpy arrays and NVIDIA's network "
            f"records are allowed")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused persistent id: not a plain network pickle")


def safe_load(path_or_file) -> object:
    """Unpickle with `RestrictedUnpickler`; numpy array records become arrays."""
    if isinstance(path_or_file, (str, Path)):
        path = Path(path_or_file)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: download a published network pickle first "
                f"(see docs/transfer.md; NVIDIA publishes them under {SOURCE_URLS[0]})")
        with open(path, "rb") as f:
            return safe_load(f)
    try:
        data = RestrictedUnpickler(path_or_file).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError,
            AttributeError, IndexError, KeyError, OverflowError, MemoryError) as e:
        raise NotImportable(f"not a readable network pickle: {type(e).__name__}: {e}") from None
    return _arrays(data)


def _arrays(obj, seen=None):
    """Replace numpy array records by their arrays, in place, through dicts/lists/records."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, _NdarrayRecord):
        if obj.array is None:
            raise UnsafePickleError("numpy array without data")
        return obj.array
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _arrays(obj[k], seen)
    elif isinstance(obj, list):
        obj[:] = [_arrays(v, seen) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_arrays(v, seen) for v in obj)
    elif isinstance(obj, PersistentObject):
        _arrays(obj.state, seen)
    elif isinstance(obj, TFNetwork):
        _arrays(obj.state, seen)
    return obj
