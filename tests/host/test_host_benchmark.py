"""Host tier: the benchmark's GPU mode runs, at reduced depth on CPU, through every node it measures."""
import pathlib
import sys

import hostlib

hostlib.require_comfyui()

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import benchmark  # noqa: E402


def test_gpu_mode_at_reduced_depth():
    text, size = benchmark.gpu_benchmark(reduced=True, steps=2)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| s") or line.startswith("| f")]
    by = {(r[0].strip("| "), r[1]): r for r in rows}
    assert {f for f, _ in by} == {"sd15", "sdxl", "flux"} and "reduced depth" in size
    for family in ("sd15", "sdxl", "flux"):
        assert by[(family, "BDIAInvert")][2] == "2"  # one evaluation per image per step
        assert 2 <= int(by[(family, "FixedPointInvert (defaults)")][2]) <= 2 * 10
        assert by[(family, "BDIAInvert")][6].strip(" |") == "n/a (CPU)"
    assert by[("flux", "PostInversionOptimize, checkpointing on, 6×2 steps")][2] == "13"  # 6·2 steps + the final state
