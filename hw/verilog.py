"""The top-level designs and their Verilog.

Every top-level design is one line of :data:`DESIGNS`; :func:`generate` returns its Verilog as
one self-contained text whose top module is named after the design (``npu_gemm``). Writing it
to a file, the cache and the command line (``npu verilog``) are in :mod:`flow.verilog`.
"""

import importlib

from amaranth.back import verilog
from amaranth.lib import wiring

__all__ = ["DESIGNS", "design", "generate"]


#: design name -> ("module:Class", top module name). The class is built with the design's
#: parameters as keyword arguments. One line per top-level design.
DESIGNS = {
    "gemm": ("hw.stream_top:GemmTop", "npu_gemm"),
    "npu": ("hw.npu:NpuTop", "npu_top"),
    "pooling": ("hw.stream_top:PoolingTop", "npu_pooling"),
    "activation": ("hw.stream_top:ActivationTop", "npu_activation"),
    "requant": ("hw.stream_top:RequantTop", "npu_requant"),
    "softmax": ("hw.stream_top:SoftmaxTop", "npu_softmax"),
}


def design(name: str, **params) -> tuple[wiring.Component, str]:
    """Build design ``name`` with ``params``; returns ``(component, top_module_name)``."""
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; known: {', '.join(sorted(DESIGNS))}")
    target, top = DESIGNS[name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**params), top


def generate(name: str, **params) -> tuple[str, str]:
    """Return ``(verilog_text, top_module_name)``."""
    component, top = design(name, **params)
    return verilog.convert(component, name=top, emit_src=False), top
