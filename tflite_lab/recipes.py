"""Stage 4: optimization recipes, as converter settings and as tflite_convert flags.

Each recipe both applies itself to a converter and returns the Python lines it stands for, so the
result can show exactly what ran.
"""
from __future__ import annotations

from dataclasses import dataclass

from .types import Optimization


@dataclass(frozen=True)
class Recipe:
    optimization: Optimization
    title: str
    explanation: str            # one line: what it does and when to use it
    needs_calibration: bool
    integer: bool               # judged by agreement/PSNR rather than max abs error


RECIPES = {
    Optimization.NONE: Recipe(Optimization.NONE, "None (float32)",
                              "Plain float32 conversion: the reference for accuracy; largest and usually slowest.",
                              False, False),
    Optimization.DYNAMIC: Recipe(Optimization.DYNAMIC, "Dynamic range",
                                 "int8 weights, float activations: ~4x smaller with no calibration data; good first try on CPU.",
                                 False, True),
    Optimization.FLOAT16: Recipe(Optimization.FLOAT16, "Float16",
                                 "float16 weights: ~2x smaller with tiny error; suits GPU delegates.",
                                 False, False),
    Optimization.INT8: Recipe(Optimization.INT8, "Full integer int8",
                              "int8 weights and activations calibrated on your samples: for microcontrollers, NPUs and Edge TPUs.",
                              True, True),
    Optimization.INT16X8: Recipe(Optimization.INT16X8, "16x8",
                                 "int16 activations, int8 weights: more accurate than int8 where activations are sensitive; fewer kernels.",
                                 True, True),
}


def recipe_lines(optimization: Optimization, int8_io: bool = False) -> list[str]:
    """The converter settings of a recipe, as Python lines (``converter``, ``tf`` and, for
    calibrated recipes, ``representative_dataset`` in scope)."""
    opt = Optimization(optimization)
    # Builtins only: Select-TF (Flex) ops are never chosen silently, since LiteRT cannot run them.
    lines = ["converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]"]
    if opt is Optimization.NONE:
        return lines
    lines.append("converter.optimizations = [tf.lite.Optimize.DEFAULT]")
    if opt is Optimization.FLOAT16:
        lines.append("converter.target_spec.supported_types = [tf.float16]")
    elif opt is Optimization.INT8:
        lines += ["converter.representative_dataset = representative_dataset",
                  "converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]"]
        if int8_io:
            lines += ["converter.inference_input_type = tf.int8",
                      "converter.inference_output_type = tf.int8"]
    elif opt is Optimization.INT16X8:
        lines += ["converter.representative_dataset = representative_dataset",
                  "converter.target_spec.supported_ops = "
                  "[tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]"]
    return lines


def apply(converter, optimization: Optimization, representative=None, int8_io: bool = False) -> list[str]:
    """Configure ``converter`` for the recipe by running exactly the lines it returns, so the
    code shown to the user is the code that ran."""
    import tensorflow as tf
    lines = recipe_lines(optimization, int8_io)
    scope = {"converter": converter, "tf": tf, "representative_dataset": representative}
    for line in lines:
        exec(line, scope)  # noqa: S102 - our own constant lines, never user input
    return lines


# TF2's tflite_convert has no optimization flags; its V1 mode does, and works on a Keras 3
# export folder. No flag takes a representative dataset, so int8 and 16x8 are not expressible.
CLI_FLAGS = {
    Optimization.NONE: [],
    Optimization.DYNAMIC: ["--enable_v1_converter", "--post_training_quantize"],
    Optimization.FLOAT16: ["--enable_v1_converter", "--post_training_quantize", "--quantize_to_float16"],
}
