"""Names shared by the Attention Edit modules: transformer_options keys, node names, widget options."""
from ..host import io

CONFIG = "inversion_suite_attention_edit"  # transformer_options key holding the EditConfig
STAMP = "inversion_suite_attention_block"  # transformer_options key holding the current DiT block
TEXT_LENGTH = "inversion_suite_text_tokens"
IMAGE_LENGTH = "inversion_suite_image_tokens"
FORWARD = "inversion_suite_attention_forward"  # transformer_options key: the model call's hooks.Forward
WRAPPER = "inversion_suite_attention_edit"
RECORD, INJECT, REPORT = "AttentionEditRecord", "AttentionEditInject", "AttentionEditReport"
STORAGE = ["auto", "offload device", "compute device"]
MODES = ["word swap", "refine"]
AttentionRecordType = io.Custom("ATTENTION_RECORD")
MASK_MODES = ["soft", "binary"]
BACKGROUND = ["source attention", "latent only"]
