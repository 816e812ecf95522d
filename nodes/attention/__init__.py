"""Attention Edit: Record → Inject. Attention control for editing through ComfyUI's own hooks.

Record patches a clone of the MODEL so that a sampling run (an exact inversion: BDIA Invert, Fixed-Point
Invert; or a plain regeneration with the source prompt) stores the source's attention; Inject patches a clone
so that the edited regeneration uses it. The hooks, all on clones, never on the input MODEL:

* UNets (SD1.x/SDXL): ``patches_replace["attn1"/"attn2"]`` per transformer layer. attn1: the source's q, k
  (self-attention maps, P2P §3.2 / Plug-and-Play). attn2: the source's cross-attention probabilities (P2P word
  swap, refinement, reweighting).
* DiTs (SD3, Flux, Flux.2, Chroma, Qwen-Image, HiDream, Lumina 2 / Z-Image, Wan, HunyuanVideo, LTX-Video,
  Kandinsky 5, Cosmos, … : ``families.LAYOUTS``): ``transformer_options["optimized_attention_override"]`` chained with
  any override already installed (declining calls go to the previous override or to ComfyUI's attention function).
  The override learns which block a call belongs to from a ``patches_replace["dit"]`` stamp per block (block, image
  rows: the text stream's length for [txt; img], the image stream's for [img; txt]), from the call's place in the
  model call where a family has no block replace point (HiDream, Lumina 2 / Z-Image, Cosmos, CogVideoX), or from the
  block ComfyUI stamps itself (Kandinsky 5, Krea 2). The image rows of V (and K) are recorded and injected (RF-Edit /
  KV-Edit). The override sees post-RoPE q, k; record and inject use the same positions, so that is the same injection
  as the pre-RoPE ``attn1_patch`` of 0.38, and it is one mechanism on every version. Families whose attention calls
  pass no transformer_options (PixArt-Σ, HunyuanDiT, Ernie-Image) stay out of reach: no ComfyUI class is patched.

The mathematics is in ``..core.attention``. What is stored is keyed by (layer, step), where a step is the
position of σ in the descending schedule: the inversion's ascending run and the regeneration agree on it.
Per image, the last call at a σ wins, which after a fixed-point inversion is the converged iterate. The
fixed-point inversion drops converged images from later calls; it names the images each call holds
(``transformer_options[BATCH_ROWS]``) and the record scatters their rows into storage for the whole batch.

The DiT edit lives in ComfyUI's single override slot. A node placed after Record/Inject that fills the slot
without chaining (ComfyUI 0.38's Model Attention Backend, ``ModelPatcher.set_model_optimized_attention``) would
make the edit a silent plain regeneration; sampling refuses it before the first model call, and every model
call checks that the override saw the blocks it stamped.
"""
from .nodes import AttentionEditInject, AttentionEditRecord, AttentionEditReport

__all__ = ["AttentionEditRecord", "AttentionEditInject", "AttentionEditReport"]
