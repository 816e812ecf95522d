"""Inversion Suite core: the mathematics, in pure torch (never imports ComfyUI).

Every method is one function in the k-diffusion shape
``fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options)`` where
``model(x, sigma_batch, **extra_args)`` returns the denoised prediction ``D(x, σ)``.
"""
from .frame import euler_step, sample_euler, rel_rms
from .fixed_point import invert_fixed_point
from .bdia import sample_bdia, invert_bdia, sample_obelm, invert_obelm
from .oscillation import oscillation_iterates, detect_period, cluster_centres, pairwise_distances, oscillation_inversion
from .optimize import post_inversion_optimize, fine_tune_inversion, LowRank
from . import attention  # noqa: F401  (attention control for editing: core.attention.*)

__all__ = [
    "euler_step", "sample_euler", "rel_rms",
    "invert_fixed_point",
    "sample_bdia", "invert_bdia", "sample_obelm", "invert_obelm",
    "oscillation_iterates", "detect_period", "cluster_centres", "pairwise_distances", "oscillation_inversion",
    "post_inversion_optimize", "fine_tune_inversion", "LowRank",
]
