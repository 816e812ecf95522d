"""Host-tier helpers: a real ComfyUI (found through COMFYUI_PATH or ~/ComfyUI), tiny random-weight models
built with ComfyUI's own classes, and the stock nodes driven as the server drives them."""
import importlib.util
import os
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def import_pack():
    """The repository root as the package ``inversion_suite`` (ComfyUI imports it under whatever folder name it has),
    without installing anything; also inside the test server, whose loader names it after its folder."""
    if "inversion_suite" not in sys.modules:
        spec = importlib.util.spec_from_file_location("inversion_suite", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["inversion_suite"] = module
        spec.loader.exec_module(module)
    return sys.modules["inversion_suite"]


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

_UNET = {k: v for k, v in UNET_CONFIGS["sd15"].items() if k not in ("context_dim", "adm_in_channels")}
# Every other family ComfyUI 0.3.64 ships that inversion applies to, tiny: supported_models class, unet_config,
# (Mochi's block asserts its full-size MLP width, 12288, hence mlp_ratio_x 192)
# latent channels, and the latent's scale. Conditioning shapes are in tiny_cond.
MORE_FAMILIES = {
    "sdxl": ("SDXL", {**_UNET, "context_dim": 32, "adm_in_channels": 32 + 6 * 256, "num_classes": "sequential",
                      "use_linear_in_transformer": True}, 4, 1.0),
    "sd2_v": ("SD20", {**_UNET, "context_dim": 32, "use_linear_in_transformer": True}, 4, 4.0),
    "pixart_sigma": ("PixArtSigma", {"image_model": "pixart_sigma", "input_size": 48, "patch_size": 4, "in_channels": 4,
                                     "hidden_size": 64, "depth": 2, "num_heads": 2, "caption_channels": 32,
                                     "model_max_length": 4, "micro_condition": False, "pe_interpolation": 1.0}, 4, 1.0),
    "auraflow": ("AuraFlow", {"in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 64, "n_layers": 2,
                              "n_double_layers": 1, "n_heads": 2, "global_conddim": 64, "cond_seq_dim": 32,
                              "max_seq": 64}, 4, 1.0),
    "hunyuan_dit": ("HunyuanDiT", {"image_model": "hydit", "input_size": 16, "patch_size": 2, "in_channels": 4,
                                   "hidden_size": 64, "depth": 2, "num_heads": 2, "text_states_dim": 32,
                                   "text_states_dim_t5": 32, "text_len": 4, "text_len_t5": 4}, 4, 1.0),
    "lumina2": ("Lumina2", {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "n_layers": 1,
                            "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16, "qk_norm": True,
                            "cap_feat_dim": 32, "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512]}, 16, 2.0),
    "hidream": ("HiDream", {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
                            "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 32, "num_attention_heads": 2,
                            "caption_channels": [32, 32], "text_emb_dim": 32, "num_routed_experts": 2,
                            "num_activated_experts": 1, "axes_dims_rope": [16, 8, 8], "max_resolution": [32, 32],
                            "llama_layers": [0, 1]}, 16, 2.0),
    "chroma": ("Chroma", {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 32,
                          "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                          "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64,
                          "out_dim": 64, "hidden_dim": 64, "n_layers": 1}, 16, 2.0),
    "qwen_image": ("QwenImage", {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                                 "num_layers": 1, "attention_head_dim": 32, "num_attention_heads": 2,
                                 "joint_attention_dim": 32, "axes_dims_rope": [8, 12, 12]}, 16, 1.0),
    "wan21": ("WAN21_T2V", {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 4,
                            "in_dim": 16, "dim": 64, "ffn_dim": 128, "freq_dim": 32, "text_dim": 32, "out_dim": 16,
                            "num_heads": 2, "num_layers": 1}, 16, 1.0),
    "wan22": ("WAN22_T2V", {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 4,
                            "in_dim": 48, "dim": 64, "ffn_dim": 128, "freq_dim": 32, "text_dim": 32, "out_dim": 48,
                            "num_heads": 2, "num_layers": 1}, 48, 1.0),
    "hunyuan_video": ("HunyuanVideo", {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16,
                                       "vec_in_dim": 32, "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 4.0,
                                       "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12],
                                       "theta": 256, "patch_size": [1, 2, 2], "qkv_bias": True,
                                       "guidance_embed": True, "byt5": False, "meanflow": False}, 16, 1.0),
    "ltxv": ("LTXV", {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
                      "num_attention_heads": 2, "caption_channels": 32, "num_layers": 1}, 128, 1.0),
    "mochi": ("GenmoMochi", {"image_model": "mochi_preview", "patch_size": 2, "in_channels": 12, "hidden_size_x": 64,
                             "hidden_size_y": 32, "depth": 1, "num_heads": 2, "mlp_ratio_x": 192.0, "mlp_ratio_y": 4.0,
                             "use_t5": True, "t5_feat_dim": 32, "t5_token_length": 4, "learn_sigma": False,
                             "qk_norm": True, "qkv_bias": False, "out_bias": True, "attn_drop": 0.0,
                             "patch_embed_bias": True, "posenc_preserve_area": True, "timestep_mlp_bias": True,
                             "attend_to_padding": False, "timestep_scale": 1000.0, "rope_theta": 10000.0}, 12, 1.0),
    "cosmos_predict2": ("CosmosT2IPredict2", {"image_model": "cosmos_predict2", "max_img_h": 64, "max_img_w": 64,
                                              "max_frames": 8, "in_channels": 16, "out_channels": 16,
                                              "patch_spatial": 2, "patch_temporal": 1, "concat_padding_mask": True,
                                              "model_channels": 64, "num_blocks": 1, "num_heads": 2,
                                              "crossattn_emb_channels": 32, "pos_emb_cls": "rope3d",
                                              "pos_emb_learnable": True, "use_adaln_lora": True,
                                              "adaln_lora_dim": 16, "rope_enable_fps_modulation": False}, 16, 1.0),
}
# Refused by the nodes (tested): Lotus outputs the clean latent directly (ComfyUI's IMG_TO_IMG sampling)
REFUSED_FAMILIES = {
    "lotus": ("LotusD", {**_UNET, "context_dim": 32, "adm_in_channels": 4, "num_classes": "sequential",
                         "num_head_channels": 16, "use_linear_in_transformer": True}, 4, 1.0),
}
MIN_SIZE = {"pixart_sigma": 48}  # PixArt's position embedding divides by round(size / 64) · 64 (pixels)
VIDEO = {"wan21", "wan22", "hunyuan_video", "ltxv", "mochi", "cosmos_predict2"}
ALL_FAMILIES = FAMILIES + list(MORE_FAMILIES)


# The params dataclass a family's diffusion model is built from, where it has one: newer ComfyUI adds required fields
# to them, which ``host.complete_params`` fills as the running ComfyUI's model detection does for a plain checkpoint.
PARAMS = {"flux": "comfy.ldm.flux.model.FluxParams", "chroma": "comfy.ldm.chroma.model.ChromaParams",
          "hunyuan_video": "comfy.ldm.hunyuan_video.model.HunyuanVideoParams"}


def params_class(family):
    import importlib
    if family not in PARAMS:
        return None
    module, name = PARAMS[family].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _config(family):
    import comfy.supported_models as sm
    if family in UNET_CONFIGS:
        name, unet = {"sd15": "SD15", "sd3": "SD3", "flux": "Flux"}[family], dict(UNET_CONFIGS[family])
    else:
        name, unet = {**MORE_FAMILIES, **REFUSED_FAMILIES}[family][:2]
        unet = dict(unet)
    if params_class(family) is not None:
        import_pack()
        from inversion_suite.nodes.host import complete_params
        unet = complete_params(params_class(family), unet)
    config = getattr(sm, name)(unet)
    if family in ("sd2_v", "sdxl"):
        config.unet_config.update(num_head_channels=16)  # 64-channel heads do not fit 32 channels
    return config


def channels(family):
    return CHANNELS[family] if family in CHANNELS else MORE_FAMILIES[family][2]


def tiny_model(family, seed=0, scale=0.05):
    """A ModelPatcher around a tiny random-weight model of ``family`` (any of ALL_FAMILIES), built with ComfyUI's own
    supported_models class."""
    import comfy.model_management as mm
    import comfy.model_patcher
    config = _config(family)
    config.set_inference_dtype(torch.float32, None)
    # SD2 tells v-prediction from ε by the spread of one norm bias in the checkpoint
    state_dict = {"output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.ones(8) * torch.arange(8)} \
        if family == "sd2_v" else {}
    model = config.get_model(state_dict)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_cond(family, seed=1, guidance=3.5):
    """Minimal CONDITIONING of the shapes the tiny ``family`` model expects (no text encoder needed)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)
    extra = {"pooled_output": randn(1, 32)} if family in ("sd3", "flux", "chroma", "hunyuan_video", "hidream") else {}
    context = randn(1, 4, 32)
    if family in ("flux", "hunyuan_video"):
        extra["guidance"] = guidance
    if family == "sdxl":
        extra.update(pooled_output=randn(1, 32), width=64, height=64)
    if family in ("lumina2", "hunyuan_dit", "ltxv", "mochi"):  # (HunyuanVideo's encoder drops an all-ones mask)
        extra["attention_mask"] = torch.ones(1, 4, dtype=torch.long)
    if family == "hunyuan_dit":
        extra.update(conditioning_mt5xl=randn(1, 4, 32), attention_mask_mt5xl=torch.ones(1, 4, dtype=torch.long))
    if family == "hidream":
        extra["conditioning_llama3"] = randn(1, 2, 4, 32)
    return [[context, extra]]


def image_latent(family, batch=2, size=16, seed=2, frames=2):
    """A VAE-space latent of plausible magnitude for the family ([B, C, T, H, W] for video families)."""
    g = torch.Generator().manual_seed(seed)
    scale = {"sd15": 4.0, "sd3": 0.6, "flux": 2.0}[family] if family in CHANNELS else MORE_FAMILIES[family][3]
    time = (frames,) if family in VIDEO else (1,) if family == "qwen_image" else ()
    return {"samples": torch.randn(batch, channels(family), *time, size, size, generator=g) * scale}


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
