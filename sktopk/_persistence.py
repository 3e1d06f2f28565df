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

import numpy as np
import torch
from torch import nn

#: Layout of the state that ``__getstate__`` writes; bump it when the layout changes.
FORMAT_VERSION = 2

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
    attributes = {}
    for name, value in vars(module).items():
        if name in _MODULE_INTERNALS:
            continue
        if _holds_tensor(value):
            raise TypeError(
                f"Cannot save {type(module).__name__}: its attribute {name!r} holds tensors "
                "outside the module's parameters and buffers. Register them with "
                "register_buffer (or nn.Parameter) so they are saved with the weights."
            )
        if isinstance(value, (nn.Module, torch.Generator)):
            raise TypeError(f"Cannot save {type(module).__name__}: its attribute {name!r} is a "
                            f"{type(value).__name__} outside the module tree.")
        attributes[name] = value
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
    module.__dict__.update(state["attributes"])
    module.training = bool(state["training"])
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
    return module
