"""Host-tier helpers: a real ComfyUI (found through COMFYUI_PATH or ~/ComfyUI), tiny random-weight models
built with ComfyUI's own classes, and the stock nodes driven as the server drives them."""
import os
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _find_comfyui():
    """COMFYUI_PATH, else the tarball's unpacked tree that scripts/test.sh caches, else ~/ComfyUI."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).expanduser()
    cached = sorted(ROOT.glob(".cache/ComfyUI-*/comfy/samplers.py"))
    return cached[-1].parents[1] if cached else pathlib.Path.home() / "ComfyUI"


COMFYUI = _find_comfyui()


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


UNET_CONFIGS = {
    "sd15": {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32,
             "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
             "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 32, "use_temporal_resblock": False, "use_temporal_attention": False},
    "sd3": {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "adm_in_channels": 32,
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}},
            "pos_embed_scaling_factor": None, "pos_embed_max_size": None, "num_patches": None, "input_size": None,
            "x_block_self_attn_layers": []},
    "flux": {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
             "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
             "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True},
}
CHANNELS = {"sd15": 4, "sd3": 16, "flux": 16}
FAMILIES = list(UNET_CONFIGS)


def tiny_model(family, seed=0, scale=0.05):
    """A ModelPatcher around a tiny random-weight model of ``family`` ('sd15', 'sd3' or 'flux')."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    config = {"sd15": sm.SD15, "sd3": sm.SD3, "flux": sm.Flux}[family](dict(UNET_CONFIGS[family]))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_cond(family, seed=1, guidance=3.5):
    """Minimal CONDITIONING for a tiny model (no text encoder needed)."""
    g = torch.Generator().manual_seed(seed)
    extra = {} if family == "sd15" else {"pooled_output": torch.randn(1, 32, generator=g)}
    if family == "flux":
        extra["guidance"] = guidance
    return [[torch.randn(1, 4, 32, generator=g), extra]]


def image_latent(family, batch=2, size=16, seed=2):
    """A VAE-space latent of plausible magnitude for the family."""
    g = torch.Generator().manual_seed(seed)
    scale = {"sd15": 4.0, "sd3": 0.6, "flux": 2.0}[family]
    return {"samples": torch.randn(batch, CHANNELS[family], size, size, generator=g) * scale}


def sigmas(model, steps=8, scheduler="simple"):
    from comfy_extras.nodes_custom_sampler import BasicScheduler
    return BasicScheduler().get_sigmas(model, scheduler, steps, 1.0)[0]


def guider(model, family, cfg=1.0, seed=1):
    import comfy.samplers
    g = comfy.samplers.CFGGuider(model)
    if cfg == 1.0:
        g.inner_set_conds({"positive": tiny_cond(family, seed)})
    else:
        g.set_conds(tiny_cond(family, seed), tiny_cond(family, seed + 100))
    g.set_cfg(cfg)
    return g


def stock_sample(noise, guider, sampler, sigmas, latent):
    """SamplerCustomAdvanced as the server runs it; returns the output LATENT's samples."""
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced
    return SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)[0]["samples"]


def euler():
    import comfy.samplers
    return comfy.samplers.sampler_object("euler")


def disable_noise():
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise
    return Noise_EmptyNoise()


def rel(a, b):
    return float(((a.double() - b.double()).norm() / b.double().norm()))


def empty_like(latent):
    return {"samples": torch.zeros_like(latent["samples"])}


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
