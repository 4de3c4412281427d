"""NumPy golden models: the integer arithmetic the hardware must match bit for bit."""

from .gemm import gemm
from .quant import (multiply_by_quantized_multiplier, quantize_multiplier,
                    quantize_multipliers, requantize)

__all__ = ["gemm", "requantize", "quantize_multiplier", "quantize_multipliers",
           "multiply_by_quantized_multiplier"]
