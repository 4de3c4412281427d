"""LiteRT as the oracle of ``npu run`` for ``.tflite`` models.

:func:`litert_outputs` runs int8 images through the ``.tflite`` file itself on LiteRT's
interpreter with TFLite's reference kernels (``OpResolverType.BUILTIN_REF``), one image per
invocation (the models have batch 1). :func:`compare` sets the accelerator's int8 outputs
beside them and returns the ``"litert_reference"`` record of ``npu run --json``::

    {"exact": bool, "images": N, "max_abs_diff_lsb": d}

``d`` is the largest ``|ours - LiteRT|`` over every output value, in int8 steps.
"""

import numpy as np

__all__ = ["litert_outputs", "compare"]


def _interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:                       # the optional extra is missing
        raise ImportError("a .tflite model needs ai-edge-litert: pip install "
                          "'int8-npu[tflite]' (or `make venv`)") from e
    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    return interp


def litert_outputs(path, images):
    """int8 ``images`` (N, *input shape without the batch axis) -> LiteRT's int8 outputs
    ``(N, *output shape without the batch axis)``."""
    interp = _interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    images = np.asarray(images)
    if images.dtype != inp["dtype"] or tuple(images.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"{path}: images are {images.dtype} {images.shape[1:]}, LiteRT "
                         f"takes {np.dtype(inp['dtype'])} {tuple(inp['shape'][1:])}")
    outputs = []
    for x in images:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        outputs.append(np.array(interp.get_tensor(out["index"]))[0])
    return np.stack(outputs)


def compare(path, images, outputs):
    """The ``litert_reference`` record: ``outputs`` (N values per image, int8) against
    LiteRT's outputs for ``images``."""
    want = litert_outputs(path, images).reshape(len(images), -1).astype(np.int64)
    got = np.asarray(outputs).reshape(len(images), -1).astype(np.int64)
    diff = int(np.abs(got - want).max()) if want.size else 0
    return {"exact": diff == 0, "images": int(len(images)), "max_abs_diff_lsb": diff}
