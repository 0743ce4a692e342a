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


# ---- one calibration, several recipes ----
#
# TFLiteConverter.convert() with a representative dataset converts the graph to a float flatbuffer,
# calibrates it (min/max of every tensor over the samples) and quantizes. The first two steps do not
# depend on the recipe: the graph conversion sees int8 vs int16 only as an inference type, which
# rewrites fake-quant and statistics ops, and a post-training model has none. So one calibrate-only
# run per model and samples serves int8 (float or int8 I/O) and int16x8; each then replays the
# quantization step of TF 2.21's TFLiteConverterBase._quantize with the arguments convert() passes.

# The converter settings the replay below hardcodes, at the values convert() would use: a converter
# that differs (another TF version, a recipe that sets one) is converted the ordinary way instead.
REPLAYED_SETTINGS = {
    "experimental_new_quantizer": True,                       # int8 through mlir_quantize
    "experimental_use_stablehlo_quantizer": False,
    "_experimental_disable_per_channel": False,
    "_experimental_disable_per_channel_quantization_for_dense_layers": False,
    "_experimental_variable_quantization": False,              # enable_variable_quantization
    "_experimental_full_integer_quantization_bias_type": None,  # int32 bias for int8, int64 for 16x8
    "_experimental_use_buffer_offset": False,                 # convert() deduplicates buffers
    "allow_custom_ops": False,
    "ir_dump_dir": None,                                      # DebugOptions stay empty: b""
    "enable_timing": None,
    "print_ir_before": None,
    "print_ir_after": None,
}


def apply_calibrate_only(converter) -> list[str]:
    """Make a converter set up with ``apply(..., INT8, ...)`` calibrate only: convert() then returns
    the float model with its calibration statistics, without conversion metadata. Returns the lines."""
    lines = ["converter._experimental_calibrate_only = True",
             "converter.exclude_conversion_metadata = True"]
    for line in lines:
        exec(line, {"converter": converter})  # noqa: S102 - our own constant lines, never user input
    return lines


def replay_mismatch(converter) -> str | None:
    """Which converter setting the quantization replay would not honour, or None."""
    missing = object()
    for name, want in REPLAYED_SETTINGS.items():
        have = getattr(converter, name, missing)
        if have is missing:
            return f"the converter has no setting {name} (another TensorFlow than the replay was written for)"
        if have != want:
            return f"converter.{name} is {have!r}, the replay assumes {want!r}"
    if getattr(converter.target_spec, "_experimental_custom_op_registerers", []):
        return "the converter has custom op registerers"
    return None


def quantize_lines(optimization: Optimization, int8_io: bool = False) -> list[str]:
    """How convert() quantizes a calibrated model for this recipe, as Python lines (``calibrated``,
    ``tf``, ``mlir_quantize`` and ``Calibrator`` in scope; they set ``quantized``)."""
    opt = Optimization(optimization)
    if opt is Optimization.INT8:
        io = "tf.int8" if int8_io else "tf.float32"
        # As convert() calls it: fully_quantize left False, no allow_float; the MLIR quantizer makes
        # int8 I/O itself from the data types (so convert() skips _modify_model_io_type).
        return [f"quantized = mlir_quantize(calibrated, disable_per_channel=False, input_data_type={io}, "
                f"output_data_type={io}, enable_variable_quantization=False, "
                "disable_per_channel_for_dense_layers=False, debug_options_str=b'')"]
    if opt is Optimization.INT16X8:
        # For int16 activations convert() uses the older quantizer, calibrate_and_quantize (after
        # calibrating twice: calibrate(), then again inside it). Given no samples it feeds nothing
        # and quantizes with the statistics already in ``calibrated``.
        return ["quantized = Calibrator(calibrated).calibrate_and_quantize(lambda: iter(()), input_type=tf.float32, "
                "output_type=tf.float32, allow_float=False, activations_type=tf.int16, bias_type=tf.int64, "
                "disable_per_channel=False, disable_per_channel_quantization_for_dense_layers=False)"]
    raise ValueError(f"recipe {opt.value} is not calibrated")


def quantize(calibrated: bytes, optimization: Optimization, int8_io: bool = False) -> tuple[bytes, list[str]]:
    """Quantize a calibrate-only model for the recipe by running exactly the lines it returns."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.python.optimize.calibrator import Calibrator
    lines = quantize_lines(optimization, int8_io)
    scope = {"calibrated": calibrated, "tf": tf, "mlir_quantize": mlir_quantize, "Calibrator": Calibrator}
    for line in lines:
        exec(line, scope)  # noqa: S102 - our own constant lines, never user input
    return bytes(scope["quantized"]), lines
