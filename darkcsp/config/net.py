"""The ``[net]`` section: input size and the training schedule, typed like layer options."""
from __future__ import annotations

from darkcsp.config.options import Option, OptionValues, parse_options
from darkcsp.config.reader import Section

POLICIES = ("constant", "step", "steps", "exp", "poly", "random", "sig", "sgdr")

NET_OPTIONS: tuple[Option, ...] = (
    Option("width", "int", 0, minimum=0),
    Option("height", "int", 0, minimum=0),
    Option("channels", "int", 0, minimum=0),
    Option("inputs", "int", lambda v: v.width * v.height * v.channels, minimum=0),
    Option("batch", "int", 1, minimum=1),
    Option("subdivisions", "int", 1, minimum=1),
    Option("time_steps", "int", 1, minimum=1),
    Option("max_batches", "int", 0, minimum=0),
    Option("learning_rate", "float", 0.001),
    Option("learning_rate_min", "float", 0.00001),
    Option("momentum", "float", 0.9),
    Option("decay", "float", 0.0001),
    Option("adam", "int", 0),
    Option("B1", "float", 0.9),
    Option("B2", "float", 0.999),
    Option("eps", "float", 0.000001),
    Option("burn_in", "int", 0, minimum=0),
    Option("power", "float", 4.0),
    Option("policy", "str", "constant"),
    Option("step", "int", 1),
    Option("scale", "float", 1.0),
    Option("steps", "ints", None),
    Option("scales", "floats", None),
    Option("seq_scales", "floats", None),
    Option("gamma", "float", 1.0),
    Option("sgdr_cycle", "int", lambda v: v.max_batches),
    Option("sgdr_mult", "int", 2),
    Option("ema_alpha", "float", 0.0),
    Option("angle", "float", 0.0),
    Option("aspect", "float", 1.0),
    Option("saturation", "float", 1.0),
    Option("exposure", "float", 1.0),
    Option("hue", "float", 0.0),
    Option("flip", "int", 1),
    Option("blur", "int", 0),
    Option("gaussian_noise", "int", 0),
    Option("mixup", "int", 0),
    Option("cutmix", "int", 0),
    Option("mosaic", "int", 0),
    Option("mosaic_bound", "int", 0),
    Option("letter_box", "int", 0),
    Option("label_smooth_eps", "float", 0.0),
    Option("resize_step", "int", 32),
    Option("max_crop", "int", lambda v: v.width * 2),
    Option("min_crop", "int", lambda v: v.width),
    Option("track", "int", 0),
    Option("augment_speed", "int", 2),
    Option("sequential_subdivisions", "int", lambda v: v.subdivisions),
    Option("try_fix_nan", "int", 0),
    Option("weights_reject_freq", "int", 0),
    Option("equidistant_point", "int", 0),
    Option("badlabels_rejection_percentage", "float", 0.0),
    Option("num_sigmas_reject_badlabels", "float", 0.0),
    Option("use_cuda_graph", "int", 0),
    Option("loss_scale", "float", 1.0),
    Option("dynamic_minibatch", "int", 0),
    Option("optimized_memory", "int", 0),
    Option("workspace_size_limit_MB", "float", 1024.0),
    Option("contrastive", "int", 0),
    Option("contrastive_jit_flip", "int", 0),
    Option("contrastive_color", "int", 0),
    Option("unsupervised", "int", 0),
    Option("attention", "int", 0),
    Option("adversarial_lr", "float", 0.0),
    Option("max_chart_loss", "float", 20.0),
    Option("show_receptive_field", "int", 0),
)


def parse_net(section: Section) -> OptionValues:
    """Typed ``[net]`` options; the input size must be given (Darknet exits without it)."""
    values = parse_options(section, NET_OPTIONS)
    if not (values.width and values.height and values.channels):
        missing = [k for k in ("width", "height", "channels") if not values[k]]
        if values.inputs and values.width == values.height == 0:
            # A flat-input net (e.g. rnn cfgs): Darknet treats it as inputs x 1 x 1.
            values["channels"], values["width"], values["height"] = values.inputs, 1, 1
        else:
            raise section.error("the input size needs width, height and channels > 0", missing[0])
    if values.policy == "steps" and (values.steps is None or values.scales is None):
        raise section.error("policy=steps needs both steps= and scales=",
                            "steps" if values.steps is None else "scales")
    if values.steps is not None and values.scales is not None \
            and len(values.steps) != len(values.scales):
        raise section.error(f"steps has {len(values.steps)} entries but scales has "
                            f"{len(values.scales)}", "scales")
    return values
