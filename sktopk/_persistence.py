"""Torch modules as plain data, so that saved estimators hold no torch object.

A fitted estimator is saved as its parameters, its fitted attributes and its
network's weights as numpy arrays. The built-in MLP is rebuilt on load from the
architecture recorded at fit time (a trusted sktopk type); any other module is
stored as a tree of (class, plain attributes, parameters, buffers, children)
and rebuilt without calling its constructor: loading creates the object with
``cls.__new__`` and torch's own ``Module.__init__``, then fills it in. So a file
never makes sktopk call code it names (skops users still have to trust the
module's classes, as types), and a network trained on a GPU loads on a CPU-only
machine.
"""

import inspect
import weakref

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

#: Layout of the state that ``__getstate__`` writes; bump it when the layout changes.
FORMAT_VERSION = 3  # 3: torch dtypes, devices and lists of own weights in module attributes

# Attributes that ``nn.Module.__init__`` creates: rebuilt by it, never stored.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def tensor_to_array(tensor):
    """A CPU numpy copy of ``tensor`` and the name of its dtype (bfloat16 travels as float32)."""
    tensor = tensor.detach().cpu()
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return np.array(tensor.numpy()), dtype


def array_to_tensor(array, dtype):
    """Inverse of :func:`tensor_to_array`."""
    return torch.from_numpy(np.array(array)).to(getattr(torch, dtype))


def _holds_tensor(value):
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(item, torch.Tensor) for item in value)
    if isinstance(value, dict):
        return any(isinstance(item, torch.Tensor) for item in value.values())
    return False


# Attributes that torch sets outside __init__ and that hold code: the compiled
# forward of Module.compile() (a cache: the loaded module runs uncompiled).
_NOT_SAVED = frozenset({"_compiled_call_impl"})
# Hooks are functions, which a saved model does not hold: dropping them would
# change the predictions silently.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
               "_backward_pre_hooks")
# Plain stand-ins for the torch values that an attribute may hold (skops loads
# plain data only); the keys cannot clash with a user's dict.
_DTYPE, _DEVICE, _OWN_TENSORS = "__sktopk_torch_dtype__", "__sktopk_torch_device__", \
    "__sktopk_own_tensors__"


def _encode_attribute(module, name, value):
    """A plain stand-in for ``value``, or ``value`` itself when it is plain already."""
    if isinstance(value, torch.dtype):
        return {_DTYPE: str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {_DEVICE: str(value)}
    if isinstance(value, (list, tuple)) and value and all(
            item is None or isinstance(item, (torch.Tensor, weakref.ref)) for item in value):
        # Lists of the module's own parameters, or of weak references to them
        # (torch's RNN layers keep their weights so): saved as names, linked
        # again on load.
        own = {id(tensor): key for key, tensor in
               [*module._parameters.items(), *module._buffers.items()] if tensor is not None}
        weak = any(isinstance(item, weakref.ref) for item in value)
        targets = [item() if isinstance(item, weakref.ref) else item for item in value]
        if all(item is None or id(item) in own for item in targets) and not (
                weak and any(isinstance(item, torch.Tensor) for item in value)):
            return {_OWN_TENSORS: [None if item is None else own[id(item)] for item in targets],
                    "tuple": isinstance(value, tuple), "weak": weak}
    if _holds_tensor(value):
        raise TypeError(
            f"Cannot save {type(module).__name__}: its attribute {name!r} holds tensors "
            "outside the module's parameters and buffers. Register them with "
            "register_buffer (or nn.Parameter) so they are saved with the weights."
        )
    return value


def _decode_attribute(module, value):
    if isinstance(value, dict):
        if set(value) == {_DTYPE}:
            dtype = getattr(torch, str(value[_DTYPE]), None)
            if not isinstance(dtype, torch.dtype):
                raise TypeError(f"The saved module names {value[_DTYPE]!r}, not a torch dtype.")
            return dtype
        if set(value) == {_DEVICE}:
            return torch.device(str(value[_DEVICE]))
        if set(value) == {_OWN_TENSORS, "tuple", "weak"}:
            own = {**module._parameters, **module._buffers}
            items = [None if key is None else own[key] for key in value[_OWN_TENSORS]]
            if value["weak"]:
                items = [None if item is None else weakref.ref(item) for item in items]
            return tuple(items) if value["tuple"] else items
    return value


def _shadows_behaviour(cls, name):
    """Whether an instance attribute ``name`` would hide a method or property of ``cls``."""
    try:
        static = inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return callable(static) or hasattr(static, "__get__")


def module_to_state(module):
    """Describe ``module`` as nested dicts of classes, plain values and numpy arrays.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    state : dict
        Input of :func:`module_from_state`.
    """
    cls = type(module)
    if parametrize.is_parametrized(module):
        # Its class is made at run time: a file naming it could not be loaded.
        raise TypeError(
            f"Cannot save {cls.__name__}: it is parametrized (weight_norm, spectral_norm, "
            "orthogonal...), and torch makes its class at run time, so no file can name it. "
            "Call torch.nn.utils.parametrize.remove_parametrizations on it after training, "
            "or compute the reparametrization in forward."
        )
    hooks = [name.strip("_") for name in _HOOK_DICTS if getattr(module, name, None)]
    if hooks:
        raise TypeError(
            f"Cannot save {cls.__name__}: it has {', '.join(hooks)} registered, and hooks are "
            "functions, which a saved model does not hold (the loaded model would predict "
            "otherwise). Do their work in forward instead."
        )
    attributes = {}
    for name, value in vars(module).items():
        if name in _MODULE_INTERNALS or name in _NOT_SAVED:
            continue
        if isinstance(value, (nn.Module, torch.Generator)):
            raise TypeError(f"Cannot save {cls.__name__}: its attribute {name!r} is a "
                            f"{type(value).__name__} outside the module tree.")
        attributes[name] = _encode_attribute(module, name, value)
    parameters = {}
    for name, parameter in module._parameters.items():
        parameters[name] = (None if parameter is None
                            else (*tensor_to_array(parameter), parameter.requires_grad))
    buffers = {name: None if buffer is None else tensor_to_array(buffer)
               for name, buffer in module._buffers.items()}
    children = {name: None if child is None else module_to_state(child)
                for name, child in module._modules.items()}
    return {
        "class": type(module),
        "training": module.training,
        "attributes": attributes,
        "parameters": parameters,
        "buffers": buffers,
        "non_persistent_buffers": sorted(module._non_persistent_buffers_set),
        "children": children,
    }


def module_from_state(state):
    """Rebuild the module that :func:`module_to_state` described, without calling its constructor.

    Parameters
    ----------
    state : dict

    Returns
    -------
    module : torch.nn.Module, on the CPU
    """
    cls = state["class"]
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"The saved network names {cls!r}, which is not a torch.nn.Module class.")
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    # An attribute named like a method (say "to") would make later calls run
    # whatever function the file put there.
    # torch's own internals (hooks, compiled call) are never saved: a file that
    # sets them was not written by sktopk.
    hiding = sorted(name for name in state["attributes"]
                    if name in _MODULE_INTERNALS or name in _NOT_SAVED
                    or _shadows_behaviour(cls, name))
    if hiding:
        raise TypeError(f"The saved {cls.__name__} has attributes {hiding} that would hide "
                        "methods, properties or torch internals of its class: the file is not "
                        "one sktopk wrote.")
    for name, entry in state["parameters"].items():
        if entry is None:
            module._parameters[name] = None
        else:
            array, dtype, requires_grad = entry
            module._parameters[name] = nn.Parameter(array_to_tensor(array, dtype),
                                                    requires_grad=bool(requires_grad))
    for name, entry in state["buffers"].items():
        module._buffers[name] = None if entry is None else array_to_tensor(*entry)
    module._non_persistent_buffers_set = set(state["non_persistent_buffers"])
    for name, child in state["children"].items():
        module._modules[name] = None if child is None else module_from_state(child)
    # After the parameters: some attributes link to them.
    module.__dict__.update({name: _decode_attribute(module, value)
                            for name, value in state["attributes"].items()})
    module.training = bool(state["training"])
    return module
