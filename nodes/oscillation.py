"""OscillationInvert and GroupInversion: thin adapters over core.oscillation."""
import torch
from .host import io, open_model, output_latent
import comfy.samplers

from .. import core
from .common import CATEGORY, check_finite_output, conditioning_inputs, fail, sigma_inputs, widgets
from .plot import distance_map, report_ui

DECODE = ["one-step", "sample"]
LETTERS = "ABCD"


def oscillation_inputs():
    return sigma_inputs(io, "The fixed noise level σ (the paper: 0.40 on Flux's unshifted schedule).") + [
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


def run_oscillation(opened, latents, schedule, options):
    """Shared by both nodes: the core pipeline inside the guider (``core.oscillation_inversion``), then the outputs."""
    node, patcher = opened.node, opened.patcher
    iterations = options["iterations"]
    burn_in = min(options["burn_in"], iterations - 2)
    sigma = opened.fixed_sigma(options["sigma"], options["sigma_mode"])
    targets = [opened.process_in(t.float()) for t in latents]
    tail = [float(s) for s in comfy.samplers.calculate_sigmas(opened.model_sampling, "simple", options["decode_steps"])
            if s < sigma]
    decode_sigmas = [sigma, 0.0] if options["decode"] == "one-step" else [sigma] + tail
    precision = history_precision(patcher)

    def run(model, x, sigmas, extra_args, callback):
        return core.oscillation_inversion(model, [t.to(x.device, x.dtype) for t in targets], sigma, extra_args,
                                          callback, iterations=iterations, schedule=schedule, burn_in=burn_in,
                                          max_period=options["max_period"], decode_sigmas=decode_sigmas,
                                          history_dtype=precision, return_info=True)
    ran = opened.run(run, latents[0], torch.tensor([sigma, 0.0]), total=iterations + len(decode_sigmas) - 1)
    info = ran.info
    check_finite_output(node, "the cluster centres", info["centres"])
    history = info["history"]
    errors = ", ".join(f"p={p}: {e:.2e}" for p, e in enumerate(info["errors"], 1))
    shape = "aperiodic orbit, clustered by its least-error period" if min(info["errors"]) >= 0.1 else "period"
    text = (f"{node}: σ={sigma:.4g}, {iterations} iterations, burn-in {burn_in}; detected {shape} "
            f"{info['period']} (periodicity errors {errors}); centres: {', '.join(info['labels'])}; "
            f"{ran.calls} model calls")
    like = {**options["like"]}
    return io.NodeOutput(rebatched_latent(like, opened.clean(like, ran.state)["samples"]),
                         rebatched_latent(like, opened.noisy(like, info["centres"], sigma)["samples"]),
                         rebatched_latent(like, opened.clean(like, history.flatten(0, 1))["samples"]),
                         distance_map(core.pairwise_distances(history), info["period"], burn_in), text,
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
        options = widgets(cls, locals())
        opened = open_model("OscillationInvert", model, positive, negative, options["cfg"], guider)
        return run_oscillation(opened, [opened.latent("latent", latent)], (0,), {**options, "like": latent})


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
        options = widgets(cls, locals())
        opened = open_model(node, model, positive, negative, options["cfg"], guider)
        images = [image_a, image_b, image_c, image_d]
        order = parse_schedule(node, schedule, [im is not None for im in images])
        first = opened.latent("image_a", image_a)
        samples = [first] + [opened.latent(f"image_{c.lower()}", im, first, "image_a") if im is not None else None
                             for c, im in zip(LETTERS[1:], images[1:])]
        used = sorted(set(order))
        return run_oscillation(opened, [samples[i] for i in used], tuple(used.index(i) for i in order),
                               {**options, "like": image_a})
