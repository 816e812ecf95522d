"""Host-tier helpers: a real ComfyUI (found through COMFYUI_PATH or ~/ComfyUI), the package imported as
``inversion_suite``, and test-only probes (call counting, Cancel, autograd against a finite difference). The tiny
models and stock-node drivers are the package's (``inversion_suite.nodes.tiny``): after ``require_comfyui()`` every
name of that module reads as ``hostlib.<name>``."""
import os
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from comfyui_host import comfyui_path, import_pack  # noqa: E402  (the scripts' way to ComfyUI and the pack)


COMFYUI = comfyui_path() or pathlib.Path.home() / "ComfyUI"  # COMFYUI_PATH, else the newest tree in .cache/


def require_comfyui():
    """Skip the calling test module, with the reason printed, when no ComfyUI is found; fail instead when
    INVERSION_SUITE_REQUIRE_HOST is set (scripts/test.sh sets it once it has set a host up)."""
    if not (COMFYUI / "comfy" / "samplers.py").is_file():
        reason = f"host tier: no ComfyUI at {COMFYUI} (set COMFYUI_PATH to a ComfyUI checkout)"
        if os.environ.get("INVERSION_SUITE_REQUIRE_HOST"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    if str(COMFYUI) not in sys.path:
        sys.path.append(str(COMFYUI))
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False


def rel(a, b):
    return float(((a.double() - b.double()).norm() / b.double().norm()))


def __getattr__(name):
    """``hostlib.tiny_model``, ``hostlib.FAMILIES``…: the names of ``inversion_suite.nodes.tiny`` (after
    ``require_comfyui``)."""
    if name.startswith("__"):
        raise AttributeError(name)
    import_pack()
    import importlib
    return getattr(importlib.import_module("inversion_suite.nodes.tiny"), name)


def attention_record(model, **options):
    """Attention Edit: Record run as the server runs it, by default on every block for every step with everything
    recorded (``options`` change any widget): (record MODEL, record, report)."""
    from inversion_suite.nodes.attention import AttentionEditRecord
    settings = dict(blocks="all", steps=1.0, cross_attention=True, self_attention=True, keys=True, storage="auto")
    settings.update(options)
    with torch.inference_mode():
        return AttentionEditRecord.execute(model=model, **settings).args


def positive_guider(model, cond):
    """A stock CFGGuider at cfg 1 on the positive conditioning ``cond`` alone."""
    import comfy.samplers
    g = comfy.samplers.CFGGuider(model)
    g.inner_set_conds({"positive": cond})
    g.set_cfg(1.0)
    return g


def counting(model, interrupt_at=None):
    """A clone of ``model`` that counts its calls (returned list) and, with ``interrupt_at``, presses Cancel
    (ComfyUI's interrupt flag) during that call, as the UI's Cancel would."""
    import comfy.model_management as mm
    calls = []

    def wrapper(apply_model, args):
        calls.append(args["input"].shape[0])
        if len(calls) == interrupt_at:
            mm.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])
    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, calls


def autograd_against_difference(guider, latent, sigma, eps):
    """Through ``guider`` (stock sampling path) at ``sigma``: the directional derivative of mean(D(z, σ)²) along a
    seeded direction, by autograd and by a central difference of step ``eps``; also the gradient's norm."""
    import comfy.samplers
    from inversion_suite.nodes.host import training
    found = {}

    class Probe(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            def loss(z):
                return model_wrap(z, sigmas[:1].clone().expand(z.shape[0]), **extra_args).square().mean()
            with torch.inference_mode(False), torch.enable_grad(), training():  # as the nodes differentiate
                z = latent_image.clone().requires_grad_(True)
                loss(z).backward()
                v = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    fd = (loss(z + eps * v) - loss(z - eps * v)) / (2 * eps)
                found.update(grad=float((z.grad * v).sum()), fd=float(fd), norm=float(z.grad.norm()))
            return latent_image
    with torch.inference_mode():
        guider.sample(torch.zeros_like(latent), latent, Probe(), torch.tensor([sigma, 0.0]))
    return found
