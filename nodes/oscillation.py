"""OscillationInvert and GroupInversion: thin adapters over core.oscillation."""
import torch
from .host import io
import comfy.samplers

from .. import core
from .common import (CATEGORY, check_choice, check_finite_output, check_latent, check_range, conditioning_inputs,
                     fail, make_guider, model_family, model_shape, output_latent, run_in_guider, state_to_latent)
from .plot import distance_map, report_ui

DECODE = ["one-step", "sample"]
LETTERS = "ABCD"


def oscillation_inputs():
    return [
        io.Float.Input("sigma", default=0.40, min=SIGMA_MIN, max=SIGMA_MAX, step=0.01,
                       tooltip="The fixed noise level σ (the paper: 0.40 on Flux's unshifted schedule). At most the "
                               "model's σ_max: 1 for flow models (SD3, Flux), about 14.6 for SD1.x/SDXL. In "
                               "'fraction of schedule' mode at most 1."),
        io.Combo.Input("sigma_mode", options=["absolute", "fraction of schedule"], default="absolute",
                       tooltip="absolute: σ as given. fraction of schedule: σ is the noise level that far along the "
                               "model's own schedule from clean (0) to pure noise (1), shift included."),
        io.Int.Input("iterations", default=20, min=2, max=1000,
                     tooltip="Fixed-point iterations, one model call each (the paper: 20–30). Memory grows with "
                             "them: per iteration and image, the history keeps one latent in the model's precision "
                             "(2 bytes per value in fp16/bf16) on the model's device and the iterates output one in "
                             "float32 (4 bytes); the period detection briefly needs about 14 bytes per value more "
                             "(float64). A Flux 1024² latent (16×128×128 values): 0.5 + 1 MB kept and 3.5 MB "
                             "briefly per iteration, so 1000 iterations keep 1.5 GB per image and need 3.5 GB more "
                             "for a moment."),
        io.Int.Input("burn_in", default=4, min=0, max=999,
                     tooltip="Iterations dropped before the period and the clusters are measured; at most "
                             "iterations − 2 are dropped (a larger value is reduced to that)."),
        io.Int.Input("max_period", default=6, min=1, max=64, tooltip="Longest period looked for."),
        io.Combo.Input("decode", options=DECODE, default="one-step",
                       tooltip="one-step: the centre's clean prediction D(z̄, σ) (one model call). sample: Euler from "
                               "σ down to 0 along the model's schedule."),
        io.Int.Input("decode_steps", default=10, min=1, max=200,
                     tooltip="For decode = sample: steps of the full schedule (those below σ are used)."),
    ]


OUTPUTS = [
    io.Latent.Output(display_name="centres", tooltip="Every cluster centre, decoded; a batch of centres × images "
                                                     "(centre-major): pick with LatentFromBatch."),
    io.Latent.Output(display_name="centre_states", tooltip="The centres as states at σ: regenerate with DisableNoise "
                                                           "and the sigmas from σ down (SplitSigmas)."),
    io.Latent.Output(display_name="iterates", tooltip="The raw iterates z_0 … z_K (batch of iterations × images)."),
    io.Image.Output(display_name="distances", tooltip="Pairwise distances between iterates (the paper's Fig. 2c): "
                                                      "a chequer pattern of period p means p clusters."),
    io.String.Output(display_name="report", tooltip="Detected period, periodicity errors, centre labels, model calls."),
]


SIGMA_MIN, SIGMA_MAX = 0.01, 14.6  # the σ widget's range: up to SD1.x/SDXL's σ_max (14.61); flow models stop at 1
SIGMA_MODES = ["absolute", "fraction of schedule"]


def resolve_sigma(node, ms, sigma, sigma_mode):
    """The absolute σ, in (0, σ_max] of this model; a fraction of 1 is σ_max."""
    check_choice(node, "sigma_mode", sigma_mode, SIGMA_MODES)
    smax = float(ms.sigma_max)
    if sigma_mode == "fraction of schedule":
        sigma = check_range(node, "sigma", sigma, SIGMA_MIN, 1.0)
        sigma = min(float(ms.percent_to_sigma(1.0 - sigma)), smax)
    else:
        sigma = check_range(node, "sigma", sigma, SIGMA_MIN, SIGMA_MAX)
    if not 0 < sigma <= smax:
        fail(node, "sigma", f"must be at most σ_max = {smax:.4g} for this model", sigma)
    return sigma


def history_precision(patcher):
    """The dtype the model computes in (its manual-cast dtype, else its weights'), float32 for anything else (fp8
    weights, float64): the precision the iterate history is kept in."""
    try:
        dtype = patcher.get_model_object("manual_cast_dtype")
    except AttributeError:
        dtype = None
    dtype = dtype or getattr(patcher.model, "get_dtype", lambda: torch.float32)()
    return dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32


def rebatched_latent(latent, samples):
    """``output_latent`` for an output whose batch may differ from the input's (centres × images, iterations ×
    images): with another batch size, keys that address the input's batch elements (``batch_index``, masks, any
    other tensor or list) would mislead or break a stock sampler downstream, so only plain values are kept."""
    out = output_latent(latent, samples)
    if samples.shape[0] != latent["samples"].shape[0]:
        for key in [k for k, v in out.items() if k != "samples" and (k == "batch_index" or torch.is_tensor(v)
                                                                     or isinstance(v, (list, tuple)))]:
            del out[key]
    return out


def run_oscillation(node, guider, latents, schedule, sigma, sigma_mode, iterations, burn_in, max_period, decode,
                    decode_steps):
    """Shared by both nodes: validate, iterate inside the guider, cluster, decode; returns the node outputs."""
    patcher = guider.model_patcher
    ms = patcher.get_model_object("model_sampling")
    model_family(node, ms)
    iterations = check_range(node, "iterations", iterations, 2, 1000, integer=True)
    burn_in = min(check_range(node, "burn_in", burn_in, 0, 999, integer=True), iterations - 2)
    max_period = check_range(node, "max_period", max_period, 1, 64, integer=True)
    decode_steps = check_range(node, "decode_steps", decode_steps, 1, 200, integer=True)
    check_choice(node, "decode", decode, DECODE)
    sigma = resolve_sigma(node, ms, sigma, sigma_mode)
    process_in = patcher.get_model_object("process_latent_in")
    targets = [process_in(model_shape(node, "latent", latent["samples"], patcher).float()) for latent in latents]
    tail = [float(s) for s in comfy.samplers.calculate_sigmas(ms, "simple", decode_steps) if s < sigma]
    decode_sigmas = [sigma, 0.0] if decode == "one-step" else [sigma] + tail
    found = {}
    precision = history_precision(patcher)

    def run(model, x, sigmas, extra_args, callback):
        ys = [t.to(x.device, x.dtype) for t in targets]
        history = core.oscillation_iterates(model, ys, sigma, iterations, schedule, extra_args, callback,
                                            history_dtype=precision)
        period, errors = core.detect_period(history[burn_in:], max_period)
        centres, labels = core.cluster_centres(history[burn_in:], period, offset=burn_in)
        flat = centres.flatten(0, 1).to(x.dtype)
        found.update(history=history, period=period, errors=errors, labels=labels, states=flat)
        decoded = core.sample_euler(model, flat, torch.tensor(decode_sigmas, dtype=x.dtype, device=x.device),
                                    extra_args, None if callback is None else (
                                        lambda d: callback({**d, "i": iterations + d["i"]})), disable=True)
        return decoded

    start = model_shape(node, "latent", latents[0]["samples"], patcher)
    _, sampler = run_in_guider(guider, start, torch.tensor([sigma, 0.0]), run,
                               total=iterations + len(decode_sigmas) - 1, node=node)
    check_finite_output(node, "the cluster centres", found["states"])
    process_out = patcher.get_model_object("process_latent_out")
    decoded = process_out(sampler.state.float().cpu())
    states = state_to_latent(ms, process_out, found["states"], sigma)
    history = found["history"]
    iterates = process_out(history.flatten(0, 1).float().cpu())
    errors = ", ".join(f"p={p}: {e:.2e}" for p, e in enumerate(found["errors"], 1))
    shape = "aperiodic orbit, clustered by its least-error period" if min(found["errors"]) >= 0.1 else "period"
    text = (f"{node}: σ={sigma:.4g}, {iterations} iterations, burn-in {burn_in}; detected {shape} "
            f"{found['period']} (periodicity errors {errors}); centres: {', '.join(found['labels'])}; "
            f"{sampler.counter['calls']} model calls")
    base = latents[0]
    return io.NodeOutput(rebatched_latent(base, decoded), rebatched_latent(base, states),
                         rebatched_latent(base, iterates),
                         distance_map(core.pairwise_distances(history), found["period"], burn_in), text,
                         ui=report_ui(text))


class OscillationInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_OscillationInvert", display_name="Oscillation Invert", category=CATEGORY,
            description="Oscillation Inversion (arXiv 2411.11135): fixed-point inversion at one noise level σ, "
                        "z ← z + y − D(z, σ). On flow models (Flux) the iterates of a degraded or edited image "
                        "oscillate between clusters of clean images; every cluster centre is returned, decoded, "
                        "with the iterates' distance map so you can see the structure and pick.",
            inputs=conditioning_inputs(io) + [
                io.Latent.Input("latent", tooltip="The image latent to invert (Load Image → VAE Encode → here; "
                                                  "batches allowed)."),
            ] + oscillation_inputs(),
            outputs=OUTPUTS)

    @classmethod
    def execute(cls, model, latent, sigma, sigma_mode, iterations, burn_in, max_period, decode, decode_steps,
                cfg=1.0, positive=None, negative=None, guider=None) -> io.NodeOutput:
        node = "OscillationInvert"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        samples = check_latent(node, "latent", latent, guider.model_patcher)
        latent = {**latent, "samples": samples}
        return run_oscillation(node, guider, [latent], (0,), sigma, sigma_mode, iterations, burn_in, max_period,
                               decode, decode_steps)


MAX_SCHEDULE = 64


def parse_schedule(node, text, connected):
    """'A,A,B', 'A A B' and 'AAB' all mean A, A, B: every letter is one entry; commas and spaces only separate."""
    if not isinstance(text, str):
        fail(node, "schedule", "must be text listing image letters, e.g. 'A,A,B'", repr(text))
    tokens = [t for t in text.replace(" ", ",").split(",") if t.strip()]
    if any(not t.strip().isalpha() for t in tokens):
        fail(node, "schedule", "may only hold the letters A–D separated by commas or spaces, e.g. 'A,A,B'",
             repr(text))
    letters = [c for t in tokens for c in t.strip().upper()]
    if not letters:
        fail(node, "schedule", "must list image letters, e.g. 'A,A,B'", repr(text))
    if len(letters) > MAX_SCHEDULE:
        fail(node, "schedule", f"may list at most {MAX_SCHEDULE} entries", f"{len(letters)}")
    for letter in letters:
        if letter not in LETTERS or not connected[LETTERS.index(letter)]:
            names = [f"image_{c.lower()}" for c, ok in zip(LETTERS, connected) if ok]
            fail(node, "schedule", f"may only name connected images ({', '.join(names)})", f"'{letter}'")
    return tuple(LETTERS.index(letter) for letter in letters)


class GroupInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        images = [io.Latent.Input(f"image_{c.lower()}", optional=c not in "AB",
                                  tooltip=f"Target image {c} of the group as a LATENT: Load Image → VAE Encode → "
                                          "here.") for c in LETTERS]
        return io.Schema(
            node_id="InversionSuite_GroupInversion", display_name="Group Inversion", category=CATEGORY,
            description="Group inversion (Oscillation Inversion, arXiv 2411.11135): the fixed-σ iteration cycles "
                        "several targets, z ← z + y_s(k) − D(z, σ), with a schedule such as A,A,B. Enhancement "
                        "(A = degraded image, B = a lightly enhanced copy), stroke recolouring and makeup transfer "
                        "(B = the stroke-edited image). Returns every cluster centre, decoded.",
            inputs=conditioning_inputs(io) + images + [
                io.String.Input("schedule", default="A,A,B",
                                tooltip="The order in which targets are cycled, e.g. A,A,B; its length sets the period. "
                                        "Every letter is one entry: 'A,A,B', 'A A B' and 'AAB' are the same "
                                        "schedule. Only the letters of connected images (A–D), at most 64."),
            ] + oscillation_inputs(),
            outputs=OUTPUTS)

    @classmethod
    def execute(cls, model, image_a, image_b, schedule, sigma, sigma_mode, iterations, burn_in, max_period, decode,
                decode_steps, image_c=None, image_d=None, cfg=1.0, positive=None, negative=None,
                guider=None) -> io.NodeOutput:
        node = "GroupInversion"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        images = [image_a, image_b, image_c, image_d]
        order = parse_schedule(node, schedule, [im is not None for im in images])
        shape = None
        for k, (c, im) in enumerate(zip(LETTERS, images)):
            if im is None:
                continue
            samples = check_latent(node, f"image_{c.lower()}", im, guider.model_patcher)
            images[k] = {**im, "samples": samples}
            if shape is not None and tuple(samples.shape) != shape:
                fail(node, f"image_{c.lower()}", f"must have the same shape as image_a {list(shape)}",
                     list(samples.shape))
            shape = shape or tuple(samples.shape)
        used = sorted(set(order))
        remap = tuple(used.index(i) for i in order)
        return run_oscillation(node, guider, [images[i] for i in used], remap, sigma, sigma_mode, iterations, burn_in,
                               max_period, decode, decode_steps)
