"""Tiny random-weight models of every family ComfyUI runs, built with the running ComfyUI's own supported_models
classes (configs as its model detection derives them, shrunk), conditioning of the shapes their text encoders give,
latents of plausible scale, and the stock nodes driven as the server drives them: the built-in models of the demo, the
benchmark and the tests. Needs a ComfyUI on ``sys.path`` (ComfyUI's own imports happen inside the functions)."""
import importlib
import inspect

import torch

from .host import complete_params

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
# Refused by the nodes (tested): Lotus outputs the clean latent directly (ComfyUI's IMG_TO_IMG sampling); Wan 2.1
# FlowRVS (0.30+) is a real IMG_TO_IMG_FLOW sampling, which adds no noise
REFUSED_FAMILIES = {
    "lotus": ("LotusD", {**_UNET, "context_dim": 32, "adm_in_channels": 4, "num_classes": "sequential",
                         "num_head_channels": 16, "use_linear_in_transformer": True}, 4, 1.0),
    "wan21_flowrvs": ("WAN21_FlowRVS", {**MORE_FAMILIES["wan21"][1], "model_type": "flow_rvs"}, 16, 1.0),
}
# The image and video generators ComfyUI 0.30 added, in MORE_FAMILIES' form: configs as 0.30's model_detection derives
# them from a checkpoint, shrunk (one block of each kind, 64-wide, 2 heads, small text dims). A family is collected only
# on a host whose comfy.supported_models has its class (``host_families``). Where a class's unet_extra_config fixes
# full-size dimensions (Ideogram 4, JoyImage), the tiny values given here replace them after construction.
_Z_IMAGE = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 32,  # z_image
            "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 8, "n_kv_heads": 8, "multiple_of": 16,
            "axes_dims": [8, 12, 12], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,  # modulation: dim ≥ 256
            "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
            "pad_tokens_multiple": 32}
_FLUX2 = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "context_in_dim": 48,
          "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
          "axes_dim": [8, 8, 8, 8], "theta": 2000, "patch_size": 1, "qkv_bias": False, "guidance_embed": True,
          "txt_ids_dims": [3], "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
          "default_ref_method": "index", "ref_index_scale": 10.0}
NEWER_FAMILIES = {
    "flux2": ("Flux2", _FLUX2, 128, 1.0),
    "flux2_klein": ("Flux2", {**_FLUX2, "guidance_embed": False}, 128, 1.0),  # Klein: no guidance embedder
    "z_image": ("ZImage", _Z_IMAGE, 16, 2.0),
    "qwen_image_edit": ("QwenImage", {**MORE_FAMILIES["qwen_image"][1], "default_ref_method": "index_timestep_zero"},
                        16, 1.0),  # Qwen-Image-Edit 2511: reference tokens at timestep 0 (tiny_cond gives a reference)
    "longcat_image": ("LongCatImage", {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": None,
                                       "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2,
                                       "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000,
                                       "patch_size": 2, "qkv_bias": True, "guidance_embed": False,
                                       "txt_ids_dims": [1, 2]}, 16, 2.0),
    "kandinsky5_image": ("Kandinsky5Image", {"image_model": "kandinsky5", "model_dim": 64, "axes_dims": (8, 12, 12),
                                             "rope_scale_factor": (1.0, 1.0, 1.0), "time_dim": 32, "ff_dim": 128,
                                             "visual_embed_dim": 64, "num_text_blocks": 1, "num_visual_blocks": 1,
                                             "in_text_dim": 32, "in_text_dim2": 32}, 16, 2.0),
    "ernie_image": ("ErnieImage", {"image_model": "ernie", "hidden_size": 64, "num_attention_heads": 2, "num_layers": 1,
                                   "ffn_hidden_size": 128, "in_channels": 128, "out_channels": 128, "patch_size": 1,
                                   "text_in_dim": 32, "rope_axes_dim": (8, 12, 12)}, 128, 1.0),
    "krea2": ("Krea2", {"image_model": "krea2", "features": 64, "channels": 16, "patch": 2, "layers": 1, "heads": 2,
                        "kvheads": 2, "txtlayers": 2, "txtdim": 32, "txtheads": 2, "txtkvheads": 2, "tdim": 32},
              16, 1.0),
    "anima": ("Anima", {**MORE_FAMILIES["cosmos_predict2"][1], "image_model": "anima", "crossattn_emb_channels": 1024,
                        "pos_emb_interpolation": "crop", "extra_per_block_abs_pos_emb": False,
                        "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0,
                        "rope_t_extrapolation_ratio": 1.0}, 16, 1.0),  # its LLM adapter is full size (fixed in code)
    "joyimage": ("JoyImage", {"image_model": "joyimage", "in_channels": 16, "hidden_size": 64, "patch_size": [1, 2, 2],
                              "num_layers": 1, "num_attention_heads": 2, "text_dim": 32, "rope_dim_list": [8, 12, 12]},
                 16, 1.0),
    "mage_flow": ("MageFlow", {"image_model": "mage_flow", "in_channels": 128, "num_layers": 1,
                               "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 32,
                               "axes_dims_rope": (8, 12, 12)}, 128, 1.0),
    "boogu": ("Boogu", {"image_model": "boogu", "hidden_size": 64, "num_layers": 1, "num_double_stream_layers": 1,
                        "num_refiner_layers": 1, "instruction_feat_dim": 32, "num_attention_heads": 2,
                        "num_kv_heads": 1, "multiple_of": 16, "axes_dim_rope": (8, 12, 12),
                        "axes_lens": (300, 512, 512)}, 16, 2.0),
    "ideogram4": ("Ideogram4", {"image_model": "ideogram4", "in_channels": 128, "num_layers": 1,
                                "num_attention_heads": 2, "attention_head_dim": 32, "intermediate_size": 128,
                                "adaln_dim": 32, "llm_features_dim": 64, "mrope_section": [6, 5, 5]}, 128, 1.0),
    "lens": ("Lens", {"image_model": "lens", "in_channels": 128, "out_channels": 32, "num_layers": 1,
                      "num_attention_heads": 2, "attention_head_dim": 32, "enc_hidden_dim": 32,
                      "axes_dims_rope": (8, 12, 12), "multi_layer_encoder_feature": True,
                      "selected_layer_index": (0, 1)}, 128, 1.0),
    "hidream_o1": ("HiDreamO1", {"image_model": "hidream_o1",  # pixel space, 32-pixel patches, noise scale 8
                                 "text_config_overrides": {"hidden_size": 64, "intermediate_size": 128,
                                                           "num_hidden_layers": 1, "num_attention_heads": 2,
                                                           "num_key_value_heads": 1, "head_dim": 32,
                                                           "rope_dims": [6, 5, 5]},
                                 "vision_config_overrides": {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                                                             "depth": 1, "num_position_embeddings": 64,
                                                             "deepstack_visual_indexes": ()}}, 3, 0.5),
    "z_image_pixel": ("ZImagePixelSpace", {**_Z_IMAGE, "image_model": "zimage_pixel", "patch_size": 4, "in_channels": 3,
                                           "decoder_in_channels": 48, "decoder_hidden_size": 32,
                                           "decoder_num_res_blocks": 1, "decoder_max_freqs": 4}, 3, 0.5),
    "pixeldit": ("PixelDiTT2I", {"image_model": "pixeldit_t2i", "num_groups": 2, "hidden_size": 64,
                                 "pixel_hidden_size": 8, "pixel_attn_hidden_size": 32, "pixel_num_groups": 2,
                                 "patch_depth": 1, "pixel_depth": 1, "patch_size": 4, "txt_embed_dim": 32,
                                 "txt_max_length": 8}, 3, 0.5),
    "hunyuan_video15": ("HunyuanVideo15", {"image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32,
                                           "patch_size": [1, 1, 1], "vec_in_dim": None, "axes_dim": [8, 12, 12],
                                           "meanflow": False, "context_in_dim": 32, "hidden_size": 64,
                                           "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                                           "theta": 256, "qkv_bias": True, "byt5": True, "guidance_embed": False,
                                           "use_cond_type_embedding": True, "vision_in_dim": 32,
                                           "meanflow_sum": True}, 32, 1.0),  # 65 = latent, image condition, mask
    "kandinsky5": ("Kandinsky5", {"image_model": "kandinsky5", "model_dim": 64, "axes_dims": (8, 12, 12),
                                  "time_dim": 32, "ff_dim": 128, "visual_embed_dim": 132, "num_text_blocks": 1,
                                  "num_visual_blocks": 1, "in_text_dim": 32, "in_text_dim2": 32}, 16, 1.0),
    "wan_dancer": ("WAN22_WanDancer", {**MORE_FAMILIES["wan21"][1], "model_type": "wandancer", "in_dim": 36,
                                       "music_dim": 32, "music_heads": 2, "music_latent_dim": 32}, 16, 1.0),
    "cogvideox": ("CogVideoX_T2V", {"image_model": "cogvideox", "num_attention_heads": 2, "attention_head_dim": 32,
                                    "time_embed_dim": 32, "num_layers": 1, "in_channels": 16, "patch_size": 2,
                                    "text_embed_dim": 32, "use_learned_positional_embeddings": False,
                                    "use_rotary_positional_embeddings": True}, 16, 1.0),
    "ltxav": ("LTXAV", {"image_model": "ltxav", "in_channels": 128, "audio_in_channels": 128,  # audio: 8 ch × 16 bins
                        "cross_attention_dim": 64, "audio_cross_attention_dim": 32, "attention_head_dim": 32,
                        "audio_attention_head_dim": 16, "num_attention_heads": 2, "audio_num_attention_heads": 2,
                        "caption_channels": 32, "num_layers": 1, "connector_attention_head_dim": 16,
                        "connector_num_attention_heads": 2, "connector_num_layers": 1}, 128, 1.0),
}
MIN_SIZE = {"pixart_sigma": 48,  # PixArt's position embedding divides by round(size / 64) · 64 (pixels)
            "hidream_o1": 64, "z_image_pixel": 16, "pixeldit": 16}  # pixel space: 32- and 4-pixel patches
VIDEO = {"wan21", "wan22", "hunyuan_video", "ltxv", "mochi", "cosmos_predict2",
         "hunyuan_video15", "kandinsky5", "wan_dancer", "cogvideox", "ltxav"}
IMAGE_IN_VIDEO_LAYOUT = {"qwen_image", "qwen_image_edit", "krea2", "anima", "joyimage"}  # 3-D latents of one frame
# Pixel-space families whose network predicts the clean image (D(x, σ) = x̂₀(x), no path from the input around the
# network): a trained one's D has the posterior's Jacobian, an untrained one's barely depends on x, so the first
# fixed-point step (σ = 0 → σ₁: solve D(z, σ₁) = x₀) has no contraction to converge by. Measured as not applicable.
X0_PREDICTION = {"hidream_o1", "z_image_pixel"}
ALL_FAMILIES = FAMILIES + list(MORE_FAMILIES)
_SPECS = {**MORE_FAMILIES, **NEWER_FAMILIES}


# Families whose class an older ComfyUI has without the variant: the parameter of its diffusion model they need
NEEDS_PARAMETER = {"qwen_image_edit": ("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel", "default_ref_method")}


def on_host(family):
    """Whether the running ComfyUI's supported_models has the class of ``family`` (and, for NEEDS_PARAMETER, its
    diffusion model takes the parameter); call after ``require_comfyui``."""
    import comfy.supported_models as sm
    name = {"sd15": "SD15", "sd3": "SD3", "flux": "Flux"}.get(family) or {**_SPECS, **REFUSED_FAMILIES}[family][0]
    if not hasattr(sm, name):
        return False
    if family in NEEDS_PARAMETER:
        path, parameter = NEEDS_PARAMETER[family]
        module, cls = path.rsplit(".", 1)
        return parameter in inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters
    return True


def host_families():
    """Every family the running ComfyUI ships: ALL_FAMILIES, and each of NEWER_FAMILIES whose supported_models class it
    has."""
    return ALL_FAMILIES + [f for f in NEWER_FAMILIES if on_host(f)]


# The params dataclass a family's diffusion model is built from, where it has one: newer ComfyUI adds required fields
# to them, which ``host.complete_params`` fills as the running ComfyUI's model detection does for a plain checkpoint.
PARAMS = {"flux": "comfy.ldm.flux.model.FluxParams", "chroma": "comfy.ldm.chroma.model.ChromaParams",
          "hunyuan_video": "comfy.ldm.hunyuan_video.model.HunyuanVideoParams",
          "flux2": "comfy.ldm.flux.model.FluxParams", "flux2_klein": "comfy.ldm.flux.model.FluxParams",
          "longcat_image": "comfy.ldm.flux.model.FluxParams",
          "hunyuan_video15": "comfy.ldm.hunyuan_video.model.HunyuanVideoParams"}


def params_class(family):
    if family not in PARAMS:
        return None
    module, name = PARAMS[family].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def unet_config(family):
    """The tiny unet_config of ``family`` (any of host_families() or REFUSED_FAMILIES)."""
    return dict(UNET_CONFIGS[family] if family in UNET_CONFIGS else {**_SPECS, **REFUSED_FAMILIES}[family][1])


def _config(family):
    import comfy.supported_models as sm
    name = {"sd15": "SD15", "sd3": "SD3", "flux": "Flux"}.get(family) or {**_SPECS, **REFUSED_FAMILIES}[family][0]
    if not hasattr(sm, name):
        raise ValueError(f"this ComfyUI has no supported_models.{name} ({family}): collect it only where on_host()")
    unet = unet_config(family)
    if params_class(family) is not None:
        unet = complete_params(params_class(family), unet)
    config = getattr(sm, name)(unet)
    if family in ("sd2_v", "sdxl"):
        config.unet_config.update(num_head_channels=16)  # 64-channel heads do not fit 32 channels
    if family in NEWER_FAMILIES:  # the tiny sizes over the full ones a class fixes in its unet_extra_config
        config.unet_config.update({k: v for k, v in unet.items() if k in type(config).unet_extra_config})
    return config


def channels(family):
    return CHANNELS[family] if family in CHANNELS else _SPECS[family][2]


# Weight scale where 0.05 leaves attention all but uniform: CogVideoX and Ernie-Image normalise q and k per head and
# gate every residual, so at 0.05 the query/key projections move the prediction by ~1e-10 (Fine-Tune has no signal;
# CogVideoX's zero-SNR top step, where D barely depends on x, keeps its weights below 0.2 for the fixed point)
WEIGHT_SCALE = {"cogvideox": 0.15, "ernie_image": 0.2}


def tiny_model(family, seed=0, scale=None, dtype=torch.float32):
    """A ModelPatcher around a tiny random-weight model of ``family`` (any of host_families()), built with ComfyUI's
    own supported_models class; weights N(0, scale²) (WEIGHT_SCALE, else 0.05), computing in ``dtype``."""
    scale = WEIGHT_SCALE.get(family, 0.05) if scale is None else scale
    import comfy.model_management as mm
    import comfy.model_patcher
    config = _config(family)
    config.set_inference_dtype(dtype, None)
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
    if family in NEWER_FAMILIES:
        return [list(_newer_cond(family, randn))]
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


def _newer_cond(family, randn):
    """(cross_attn, extras) as the text encoders of ComfyUI 0.30's families give them, with tiny widths: the extras
    each model's extra_conds reads (comfy/model_base.py), present where the encoder sets them."""
    width = {"flux2": 48, "flux2_klein": 48,  # Mistral / Qwen3 hidden states of 3 layers, stacked
             "krea2": 64, "ideogram4": 64, "lens": 64,  # 2 encoder layers of 32, concatenated per token
             "anima": 1024}.get(family, 32)  # Anima: Qwen3 0.6B states, read by the (full-size) LLM adapter
    context, extra = randn(1, 4, width), {}
    if family in ("flux2", "flux2_klein", "z_image", "z_image_pixel", "kandinsky5", "kandinsky5_image", "boogu",
                  "ideogram4", "pixeldit", "lens"):
        extra["attention_mask"] = torch.ones(1, 4, dtype=torch.long)
    if family in ("kandinsky5", "kandinsky5_image"):
        extra["pooled_output"] = randn(1, 32)  # CLIP-L pooled
    if family == "hunyuan_video15":  # Qwen2.5-VL without a pooled output; ByT5 for quoted text
        extra.update(pooled_output=None, conditioning_byt5small=randn(1, 4, 1472))
    if family == "qwen_image_edit":  # TextEncodeQwenImageEdit → ReferenceLatent
        extra["reference_latents"] = [randn(1, 16, 1, 8, 8)]
    if family == "wan_dancer":  # WanDancerEncodeAudio: 35 music features per frame
        extra.update(audio_embed=randn(1, 8, 35), fps=30)
    if family == "anima":  # the T5 token ids the LLM adapter reads
        extra.update(t5xxl_ids=torch.tensor([5, 17, 99, 1], dtype=torch.int), t5xxl_weights=torch.ones(4))
    if family == "ltxav":  # Gemma 3 states after the TE's projection; the model's connectors process them
        extra["unprocessed_ltxav_embeds"] = True
    if family == "hidream_o1":  # a tokenizer-only encoder: the chat-template token ids, cross_attn a stand-in
        from comfy.text_encoders import hidream_o1 as te
        ids = torch.tensor([[te.IM_START_ID, te.USER_ID, te.NEWLINE_ID, 9707, 1879, te.IM_END_ID, te.NEWLINE_ID,
                             te.IM_START_ID, te.ASSISTANT_ID, te.NEWLINE_ID, te.BOI_TOKEN_ID, te.TMS_TOKEN_ID]])
        context, extra = ids.unsqueeze(-1).float(), {"text_input_ids": ids}
    return context, extra


def image_latent(family, batch=2, size=16, seed=2, frames=2):
    """A VAE-space latent of plausible magnitude for the family ([B, C, T, H, W] for video families; pixel-space
    families: an image in [-1, 1]-like scale)."""
    g = torch.Generator().manual_seed(seed)
    scale = {"sd15": 4.0, "sd3": 0.6, "flux": 2.0}[family] if family in CHANNELS else _SPECS[family][3]
    time = (frames,) if family in VIDEO else (1,) if family in IMAGE_IN_VIDEO_LAYOUT else ()
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


def empty_like(latent):
    return {"samples": torch.zeros_like(latent["samples"])}
