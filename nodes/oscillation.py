"""OscillationInvert and GroupInversion: thin adapters over core.oscillation."""
import torch
from comfy_api.v0_0_2 import io
import comfy.samplers

from .. import core
from .common import (CATEGORY, check_latent, check_range, conditioning_inputs, fail, make_guider, model_family,
                     model_shape, output_latent, run_in_guider, state_to_latent)
from .plot import matrix_image

DECODE = ["one-step", "sample"]
LETTERS = "ABCD"


def oscillation_inputs():
    return [
        io.Float.Input("sigma", default=0.40, min=0.0, max=1000.0, step=0.01,
                       tooltip="The fixed noise level σ (the paper: 0.40 on Flux's unshifted schedule)."),
        io.Combo.Input("sigma_mode", options=["absolute", "fraction of schedule"], default="absolute",
                       tooltip="absolute: σ as given. fraction of schedule: σ is the noise level that far along the "
                               "model's own schedule from clean (0) to pure noise (1), shift included."),
        io.Int.Input("iterations", default=20, min=2, max=1000,
                     tooltip="Fixed-point iterations, one model call each (the paper: 20–30)."),
        io.Int.Input("burn_in", default=4, min=0, max=999,
                     tooltip="Iterations dropped before the period and the clusters are measured."),
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


def resolve_sigma(node, ms, sigma, sigma_mode):
    if sigma_mode == "fraction of schedule":
        check_range(node, "sigma", sigma, 0.0, 1.0, lo_open=True)
        sigma = float(ms.percent_to_sigma(1.0 - sigma))
    smax = float(ms.sigma_max)
    if not 0 < sigma < smax:
        fail(node, "sigma", f"must be in (0, σ_max = {smax:.4g}) for this model", sigma)
    return sigma


def run_oscillation(node, guider, latents, schedule, sigma, sigma_mode, iterations, burn_in, max_period, decode,
                    decode_steps):
    """Shared by both nodes: validate, iterate inside the guider, cluster, decode; returns the node outputs."""
    patcher = guider.model_patcher
    ms = patcher.get_model_object("model_sampling")
    model_family(node, ms)
    check_range(node, "iterations", iterations, 2, 1000)
    check_range(node, "burn_in", burn_in, 0, iterations - 2)
    check_range(node, "max_period", max_period, 1, 64)
    check_range(node, "decode_steps", decode_steps, 1, 200)
    if decode not in DECODE:
        fail(node, "decode", f"must be one of {DECODE}", decode)
    sigma = resolve_sigma(node, ms, sigma, sigma_mode)
    process_in = patcher.get_model_object("process_latent_in")
    targets = [process_in(model_shape(node, "latent", latent["samples"], patcher).float()) for latent in latents]
    tail = [float(s) for s in comfy.samplers.calculate_sigmas(ms, "simple", decode_steps) if s < sigma]
    decode_sigmas = [sigma, 0.0] if decode == "one-step" else [sigma] + tail
    found = {}

    def run(model, x, sigmas, extra_args, callback):
        ys = [t.to(x.device, x.dtype) for t in targets]
        history = core.oscillation_iterates(model, ys, sigma, iterations, schedule, extra_args, callback)
        period, errors = core.detect_period(history[burn_in:], max_period)
        centres, labels = core.cluster_centres(history[burn_in:], period, offset=burn_in)
        flat = centres.flatten(0, 1)
        found.update(history=history, period=period, errors=errors, labels=labels, states=flat)
        decoded = core.sample_euler(model, flat, torch.tensor(decode_sigmas, dtype=x.dtype, device=x.device),
                                    extra_args, None if callback is None else (
                                        lambda d: callback({**d, "i": iterations + d["i"]})), disable=True)
        return decoded

    start = model_shape(node, "latent", latents[0]["samples"], patcher)
    _, sampler = run_in_guider(guider, start, torch.tensor([sigma, 0.0]), run,
                               total=iterations + len(decode_sigmas) - 1)
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
    return io.NodeOutput(output_latent(base, decoded), output_latent(base, states), output_latent(base, iterates),
                         matrix_image(core.pairwise_distances(history)), text)


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
                io.Latent.Input("latent", tooltip="The image latent to invert (batches allowed)."),
            ] + oscillation_inputs(),
            outputs=OUTPUTS)

    @classmethod
    def execute(cls, model, latent, sigma, sigma_mode, iterations, burn_in, max_period, decode, decode_steps,
                cfg=1.0, positive=None, negative=None, guider=None) -> io.NodeOutput:
        node = "OscillationInvert"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        check_latent(node, "latent", latent, guider.model_patcher)
        return run_oscillation(node, guider, [latent], (0,), sigma, sigma_mode, iterations, burn_in, max_period,
                               decode, decode_steps)


def parse_schedule(node, text, connected):
    letters = [t.strip().upper() for t in text.replace(" ", ",").split(",") if t.strip()]
    if not letters:
        fail(node, "schedule", "must list image letters, e.g. 'A,A,B'", repr(text))
    for letter in letters:
        if letter not in LETTERS or not connected[LETTERS.index(letter)]:
            names = [f"image_{c.lower()}" for c, ok in zip(LETTERS, connected) if ok]
            fail(node, "schedule", f"may only name connected images ({', '.join(names)})", f"'{letter}'")
    return tuple(LETTERS.index(letter) for letter in letters)


class GroupInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        images = [io.Latent.Input(f"image_{c.lower()}", optional=c not in "AB",
                                  tooltip=f"Target image {c} of the group (VAE-encoded latent).") for c in LETTERS]
        return io.Schema(
            node_id="InversionSuite_GroupInversion", display_name="Group Inversion", category=CATEGORY,
            description="Group inversion (Oscillation Inversion, arXiv 2411.11135): the fixed-σ iteration cycles "
                        "several targets, z ← z + y_s(k) − D(z, σ), with a schedule such as A,A,B. Enhancement "
                        "(A = degraded image, B = a lightly enhanced copy), stroke recolouring and makeup transfer "
                        "(B = the stroke-edited image). Returns every cluster centre, decoded.",
            inputs=conditioning_inputs(io) + images + [
                io.String.Input("schedule", default="A,A,B",
                                tooltip="The order in which targets are cycled, e.g. A,A,B; its length sets the period."),
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
        for c, im in zip(LETTERS, images):
            if im is None:
                continue
            samples = check_latent(node, f"image_{c.lower()}", im, guider.model_patcher)
            if shape is not None and tuple(samples.shape) != shape:
                fail(node, f"image_{c.lower()}", f"must have the same shape as image_a {list(shape)}",
                     list(samples.shape))
            shape = shape or tuple(samples.shape)
        used = sorted(set(order))
        remap = tuple(used.index(i) for i in order)
        return run_oscillation(node, guider, [images[i] for i in used], remap, sigma, sigma_mode, iterations, burn_in,
                               max_period, decode, decode_steps)
