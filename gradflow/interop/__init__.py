"""Moving models and arrays between gradflow and other frameworks.

- :func:`load_torch_state_dict` / :func:`torch_state_dict`: weights from and to a PyTorch
  ``state_dict`` (names and layouts converted, every key and shape checked first).
- :func:`gradflow.from_dlpack`: zero-copy arrays from torch, JAX, CuPy... (gradflow's own arrays
  go the other way as they are: ``torch.from_dlpack(y)``).
- :func:`export_onnx`: the inference graph as an ONNX file (needs the ``onnx`` package), and
  :func:`run_onnx` to check it with onnxruntime.
"""

from ..backend import from_dlpack
from .onnx_export import export_onnx, run_onnx
from .torch_weights import InteropError, load_torch_state_dict, torch_key_map, torch_state_dict

__all__ = ["InteropError", "export_onnx", "from_dlpack", "load_torch_state_dict", "run_onnx",
           "torch_key_map", "torch_state_dict"]
