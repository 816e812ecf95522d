"""The README's support matrix (family × node), rendered from what tests/test_host_families.py measured, so the
matrix cannot drift from the tests.

    python -m pytest tests/test_host_families.py      # measures; writes test_out/support_matrix.json
    python scripts/support_matrix.py                  # prints the markdown
    python scripts/support_matrix.py --write          # replaces the part of README.md between the markers
    python scripts/support_matrix.py --check          # exit 1 if README.md's part differs or a cell failed

The markers, each on a line of its own in README.md:  <!-- support-matrix:begin -->  and  <!-- support-matrix:end -->
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- support-matrix:begin -->", "<!-- support-matrix:end -->"

FAMILIES = {  # test id: name shown, in the order shown
    "sd15": "SD1.x (ε)", "sd2_v": "SD2 (v-prediction)", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux",
    "chroma": "Chroma", "pixart_sigma": "PixArt-Σ", "auraflow": "AuraFlow", "hunyuan_dit": "HunyuanDiT (v)",
    "lumina2": "Lumina 2", "hidream": "HiDream", "qwen_image": "Qwen-Image", "cosmos_predict2": "Cosmos Predict2",
    "wan21": "Wan 2.1", "wan22": "Wan 2.2 (5B)", "hunyuan_video": "HunyuanVideo", "ltxv": "LTX-Video",
    "mochi": "Mochi",
}
REFUSED = {"lotus": "Lotus (x0 prediction)", "img_to_img_flow": "ComfyUI 0.38 IMG_TO_IMG_FLOW/VELOCITY (simulated)",
           "stable_cascade": "Stable Cascade stages"}
THRESHOLDS = "round trips ≤ 1e-2 (fixed point) and ≤ 1e-4 (BDIA, O-BELM) relative; gradients within 2e-2 of a " \
             "central difference"


def _cell(row, key, fmt):
    cell = row.get(key)
    if cell is None:
        return "—"
    return ("✓ " if cell["ok"] else "✗ ") + fmt(cell["value"])


def _err(v):
    return f"{v:.0e}".replace("e-0", "e-")


def render(data):
    head = ("| Family | Sampling (frame) | Latent | Fixed-Point Invert | BDIA / O-BELM Invert + Sampler | "
            "Oscillation / Group Inversion | Post-Inversion Optimize | Gradients | Fine-Tune Inversion |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    families = data["families"]
    for key, name in FAMILIES.items():
        row = families.get(key)
        if row is None:
            continue
        frame = row.get("frame", {}).get("value", "?")
        sampling = f"{row.get('sampling', {}).get('value', '?')} ({frame})"
        blocks = row.get("checkpointing", {}).get("value", 0)
        optimize = _cell(row, "optimize", lambda v: f"loss ×{v:.2f}")
        if optimize != "—":
            optimize += f", {blocks} block{'s' * (blocks != 1)} checkpointed" if blocks else ", no block patch point"
        lines.append(" | ".join([
            f"| {name}", sampling, row.get("latent", {}).get("value", "?"),
            _cell(row, "fixed_point", _err),
            _cell(row, "bdia", _err) + " / " + _cell(row, "o-belm", _err) + " (CFG 3, 2 images: "
            + _cell(row, "bdia_cfg", _err) + ")",
            _cell(row, "oscillation", str) + " / " + _cell(row, "group", str),
            optimize, _cell(row, "gradient", _err),
            _cell(row, "fine_tune", lambda v: f"{v} q/k layers"),
        ]) + " |")
    refused = []
    for key, label in REFUSED.items():
        if key in families:
            kind, reason = families[key]["refused"]["value"].split(": ", 1)
            refused.append(f"- {'✓' if families[key]['refused']['ok'] else '✗'} {label}: `{kind}`, {reason}")
    text = [f"Measured by `tests/test_host_families.py` on tiny random-weight models built with ComfyUI "
            f"{data.get('comfyui', '?')}'s own classes (8×8 latents, 2 frames for video; PixArt 48×48), through stock "
            f"SamplerCustomAdvanced. Numbers are relative round-trip errors, the period found, the loss ratio after "
            f"6 optimisation steps, and the relative gap between autograd and a central difference; ✓ means within "
            f"the test's threshold ({THRESHOLDS}), — not measured.", ""] + lines
    if refused:
        text += ["", "Refused by every node with a ValueError naming the node, the input `model` and the model "
                     "sampling type:"] + refused
    return "\n".join(text) + "\n"


COLUMNS = ("fixed_point", "bdia", "o-belm", "bdia_cfg", "oscillation", "group", "optimize", "gradient", "fine_tune")


def failed(data):
    """Cells that failed their threshold, and cells or refusals that were not measured."""
    families = data["families"]
    problems = [f"{fam}.{col} failed" for fam, row in families.items() for col, cell in row.items() if not cell["ok"]]
    problems += [f"{fam}.{col} not measured" for fam in FAMILIES for col in COLUMNS if col not in families.get(fam, {})]
    return problems + [f"{fam} refusal not measured" for fam in REFUSED if fam not in families]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "test_out" / "support_matrix.json")
    parser.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README part between the markers")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README part differs or a cell failed")
    args = parser.parse_args()
    if not args.json.is_file():
        sys.exit(f"{args.json} not found: run python -m pytest tests/test_host_families.py first")
    data = json.loads(args.json.read_text())
    table = render(data)
    if not (args.write or args.check):
        print(table, end="")
        return
    readme = args.readme.read_text()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"{args.readme} has no {BEGIN} … {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{BEGIN}\n{table}{END}{tail}"
    if args.check:
        problems = failed(data)
        if updated != readme:
            problems.append(f"{args.readme.name}'s support matrix differs from {args.json.name}: run "
                            f"scripts/support_matrix.py --write")
        if problems:
            sys.exit("support matrix: " + "; ".join(problems))
        print("support matrix: README matches the measurement, every cell passed")
        return
    args.readme.write_text(updated)
    print(f"wrote the support matrix into {args.readme}")


if __name__ == "__main__":
    main()
