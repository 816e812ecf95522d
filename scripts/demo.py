"""Demo: invert a test latent with every method of the pack on a built-in model, print reconstruction error and
model calls per method, and write a figure (demo_out/demo.png). Run through ./scripts/demo.sh."""
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402  (makes the package importable too)

from inversion_suite import core  # noqa: E402
from inversion_suite.core.toy import flow_sigmas, make_mixture, ve_sigmas  # noqa: E402


def run_methods(flow, steps=20):
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    results = []

    def record(name, invert, regenerate):
        model.calls = 0
        state = invert()
        calls = model.calls
        results.append((name, calls, float(core.rel_rms(regenerate(state), x0).max())))
    euler = lambda top: core.sample_euler(model, top, sigmas, disable=True)  # noqa: E731
    record("naive DDIM inversion", lambda: core.invert_fixed_point(model, x0, sigmas.flip(0), max_iter=1,
                                                                   disable=True), euler)
    record("FixedPointInvert (Anderson, inter-path)", lambda: core.invert_fixed_point(
        model, x0, sigmas.flip(0), max_iter=10, tol=1e-6, disable=True), euler)
    record("BDIA γ=0.96", lambda: core.invert_bdia(model, x0, sigmas.flip(0), gamma=0.96, flow=flow, disable=True),
           lambda pair: core.sample_bdia(model, pair[0], sigmas, gamma=0.96, flow=flow, x_below=pair[1], disable=True))
    record("O-BELM", lambda: core.invert_obelm(model, x0, sigmas.flip(0), disable=True),
           lambda pair: core.sample_obelm(model, pair[0], sigmas, x_below=pair[1], disable=True))
    sigma = 0.4 if flow else 1.0
    model.calls = 0
    history = core.oscillation_iterates(model, [x0], sigma, 30)
    period, _ = core.detect_period(history[6:])
    centres, _ = core.cluster_centres(history[6:], period, offset=6)
    decoded = model(centres[-1], torch.full((2,), sigma, dtype=torch.float64))
    results.append((f"OscillationInvert σ={sigma} (period {period}, 1-step)", model.calls,
                    float(core.rel_rms(decoded, x0).max())))
    return results


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = ROOT / "demo_out"
    out.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = "osD^vP"
    for ax, flow in zip(axes, (False, True)):
        family = "rectified flow (SD3/Flux frame)" if flow else "ε/v model (SD1.x/SDXL VE frame)"
        print(f"\n{family}, analytic Gaussian mixture, 20 steps, batch of 2")
        print(f"  {'method':<44}{'model calls':>12}{'round-trip rel. RMS':>22}")
        rows = run_methods(flow)
        for name, calls, err in rows:
            print(f"  {name:<44}{calls:>12}{err:>22.2e}")
        for i, (name, calls, err) in enumerate(rows):  # one legend entry per method: labels never overlap
            ax.scatter(calls, max(err, 1e-17), s=60, marker=markers[i % len(markers)], label=name)
        ax.set_yscale("log")
        ax.set_xlabel("model calls (inversion)")
        ax.set_ylabel("round-trip relative RMS")
        ax.set_title(family, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Inversion round trip per method: good is low error (down) at few model calls (left)")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=90)
    print(f"\nfigure written: {out / 'demo.png'}")
    toy = out / "oscillation_toy.png"
    print("\noscillation toy:\n" + benchmark.oscillation_figure(toy))
    print(f"figure written: {toy} (good: the iterates settle into the period the schedule sets, and the distance "
          "map shows a chequer of that period)")


if __name__ == "__main__":
    main()
