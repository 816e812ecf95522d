"""Attention Edit: Record → Inject. Attention control for editing through ComfyUI's own hooks.

Record patches a clone of the MODEL so that a sampling run (an exact inversion: BDIA Invert, Fixed-Point
Invert; or a plain regeneration with the source prompt) stores the source's attention; Inject patches a clone
so that the edited regeneration uses it. The hooks, all on clones, never on the input MODEL:

* UNets (SD1.x/SDXL): ``patches_replace["attn1"/"attn2"]`` per transformer layer. attn1: the source's q, k
  (self-attention maps, P2P §3.2 / Plug-and-Play). attn2: the source's cross-attention probabilities (P2P word
  swap, refinement, reweighting).
* Flow DiTs (Flux, SD3): ``transformer_options["optimized_attention_override"]`` chained with any override
  already installed (declining calls go to the previous override or to ComfyUI's attention function), plus a
  ``patches_replace["dit"]`` per chosen block that stamps block kind, index and text length into a copy of
  ``transformer_options`` (Flux and SD3 do not stamp them on 0.3.64). Token order is ``[txt; img]``; the
  image rows of V (and K) are recorded and injected (RF-Edit / KV-Edit). The override sees post-RoPE q, k;
  record and inject use the same positions, so that is the same injection as the pre-RoPE ``attn1_patch``
  of 0.38, and it is one mechanism on both versions.

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
