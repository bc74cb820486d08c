"""FLOPs per image, counted from a built Keras model's layers and their actual output shapes.

Convention: FLOPs = 2 x multiply-accumulates of the convolution and dense layers (Conv1D/2D/3D,
their transposes, DepthwiseConv2D, SeparableConv2D, Dense/EinsumDense kernels), the usual
convention of papers and of TensorFlow's profiler for MatMul / Conv2D. Biases, batch norm,
activations, pooling and element-wise adds are left out: on these nets they are a few percent.
Nested models (a pretrained backbone inside a classifier) are walked recursively.
"""

from __future__ import annotations

import contextlib
import math

import keras


def _output_shapes(layer) -> list[tuple]:
    """The output shape of every call of ``layer`` recorded in its graph nodes."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        outputs = keras.tree.flatten(node.output_tensors)
        if outputs:
            shapes.append(tuple(outputs[0].shape))
    if not shapes and getattr(layer, "built", False):
        with contextlib.suppress(AttributeError, ValueError):  # an unbuilt layer has no output
            shapes.append(tuple(layer.output.shape))
    return shapes


def _input_shapes(layer) -> list[tuple]:
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        inputs = keras.tree.flatten(node.input_tensors)
        if inputs:
            shapes.append(tuple(inputs[0].shape))
    return shapes


def _positions(shape: tuple) -> int:
    """Number of output positions per image (all dims but batch and channels)."""
    inner = shape[1:-1]
    if any(d is None for d in inner):
        raise ValueError(f"shape {shape} has an unknown dimension: FLOPs need a fixed input size")
    return math.prod(inner) if inner else 1


def layer_macs(layer) -> int:
    """Multiply-accumulates per image of one layer over all its calls (0 for cheap layers)."""
    L = keras.layers
    if isinstance(layer, keras.Model):
        return sum(layer_macs(inner) for inner in layer.layers)
    if isinstance(layer, L.SeparableConv1D | L.SeparableConv2D):
        return sum(
            _positions(s)
            * (math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))
            for s in _output_shapes(layer)
        )
    if isinstance(layer, L.Conv1DTranspose | L.Conv2DTranspose | L.Conv3DTranspose):
        # every input position scatters a full kernel
        return sum(_positions(s) * math.prod(layer.kernel.shape) for s in _input_shapes(layer))
    if isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D | L.DepthwiseConv1D | L.DepthwiseConv2D):
        # kernel (*k, in/groups, out) or depthwise (*k, in, multiplier): size = MACs per position
        kernel = layer.kernel if hasattr(layer, "kernel") else layer.depthwise_kernel
        return sum(_positions(s) * math.prod(kernel.shape) for s in _output_shapes(layer))
    if isinstance(layer, L.Dense | L.EinsumDense):
        return sum(_positions(s) * math.prod(layer.kernel.shape) for s in _output_shapes(layer))
    return 0


def count_flops(model: keras.Model) -> int:
    """FLOPs (2 x multiply-accumulates) of one forward pass of one image through ``model``."""
    return 2 * sum(layer_macs(layer) for layer in model.layers)
