"""Demo: invert a test latent with every method of the pack on a built-in model, print reconstruction error and
model evaluations per image per method, and write a figure (demo_out/demo.png; ``--out docs`` regenerates the README
images). Deterministic: every random draw is seeded, so figures and images agree run after run. Run through
./scripts/demo.sh."""
import argparse
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402  (makes the package importable too)

from inversion_suite import core  # noqa: E402
from inversion_suite.core.toy import flow_sigmas, make_mixture, ve_sigmas  # noqa: E402

IMAGES = 2


def run_methods(flow, steps=20):
    mixture = make_mixture(flow=flow)
    sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
    x0 = mixture.sample(IMAGES, generator=torch.Generator().manual_seed(1))
    count = {"evaluations": 0}

    def model(x, sigma, **kw):  # counts evaluations: batch elements, not calls
        count["evaluations"] += x.shape[0]
        return mixture(x, sigma, **kw)
    results = []

    def record(name, invert, regenerate):
        count["evaluations"] = 0
        state = invert()
        evaluations = count["evaluations"] / IMAGES
        results.append((name, evaluations, float(core.rel_rms(regenerate(state), x0).max())))
    euler = lambda top: core.sample_euler(mixture, top, sigmas, disable=True)  # noqa: E731
    record("naive DDIM inversion", lambda: core.invert_fixed_point(model, x0, sigmas.flip(0), max_iterations=1,
                                                                   warm_start="none", disable=True), euler)
    record("one evaluation per step, predicted start", lambda: core.invert_fixed_point(
        model, x0, sigmas.flip(0), max_iterations=1, flow=flow, disable=True), euler)
    record("FixedPointInvert (defaults: Anderson, intra-path 1e-4)", lambda: core.invert_fixed_point(
        model, x0, sigmas.flip(0), max_iterations=10, tolerance=1e-4, criterion="intra-path", anderson_window=3, flow=flow,
        disable=True), euler)
    record("FixedPointInvert (paper: Picard, inter-path 1e-4)", lambda: core.invert_fixed_point(
        model, x0, sigmas.flip(0), max_iterations=20, tolerance=1e-4, criterion="inter-path", anderson_window=0, flow=flow,
        generator=torch.Generator().manual_seed(0), disable=True), euler)
    record("BDIA γ=0.96", lambda: core.invert_bdia(model, x0, sigmas.flip(0), gamma=0.96, flow=flow, disable=True),
           lambda pair: core.sample_bdia(mixture, pair[0], sigmas, gamma=0.96, flow=flow, x_below=pair[1],
                                         disable=True))
    record("O-BELM", lambda: core.invert_obelm(model, x0, sigmas.flip(0), disable=True),
           lambda pair: core.sample_obelm(mixture, pair[0], sigmas, x_below=pair[1], disable=True))
    sigma = 0.4 if flow else 1.0
    count["evaluations"] = 0
    history = core.oscillation_iterates(model, [x0], sigma, 30)
    period, _ = core.detect_period(history[6:])
    centres, _ = core.cluster_centres(history[6:], period, offset=6)
    decoded = model(centres[-1], torch.full((IMAGES,), sigma, dtype=torch.float64))
    results.append((f"OscillationInvert σ={sigma} (period {period}, 1-step)", count["evaluations"] / IMAGES,
                    float(core.rel_rms(decoded, x0).max())))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "demo_out"), help="folder for demo.png and oscillation_toy.png")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    plt = benchmark.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2)) if plt is not None else (None, (None, None))
    markers = "osD^vP"
    for ax, flow in zip(axes, (False, True)):
        family = "rectified flow (SD3/Flux frame)" if flow else "ε/v model (SD1.x/SDXL VE frame)"
        print(f"\n{family}, analytic Gaussian mixture, 20 steps, batch of {IMAGES}")
        print(f"  {'method':<56}{'evaluations per image':>22}{'round-trip rel. RMS':>22}")
        rows = run_methods(flow)
        for name, evaluations, err in rows:
            print(f"  {name:<56}{evaluations:>22.1f}{err:>22.2e}")
        if ax is None:
            continue
        for i, (name, evaluations, err) in enumerate(rows):  # one legend entry per method: labels never overlap
            ax.scatter(evaluations, max(err, 1e-17), s=60, marker=markers[i % len(markers)], label=name)
        ax.set_yscale("log")
        ax.set_xlim(0, 1.9 * max(c for _, c, _ in rows))  # room for the labels
        ax.set_xlabel("model evaluations per image (inversion)")
        ax.set_ylabel("round-trip relative RMS")
        ax.set_title(family, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if plt is None:
        print("\n(figures skipped: matplotlib is not installed)")
    else:
        fig.suptitle("Inversion round trip per method: good is low error (down) at few model evaluations (left)")
        fig.tight_layout()
        fig.savefig(out / "demo.png", dpi=90, metadata={"Software": None})
        plt.close("all")
        print(f"\nfigure written: {out / 'demo.png'}")
    toy = out / "oscillation_toy.png"
    print("\noscillation toy:\n" + benchmark.oscillation_figure(toy))
    print(f"figure written: {toy} (good: the iterates settle into the period the schedule sets, and the distance "
          "map shows a chequer of that period)")


if __name__ == "__main__":
    main()
