"""The README's support matrix (family × node, and a column per ComfyUI host), rendered from what
tests/host/test_host_families.py measured on each host, so the matrix cannot drift from the tests.

    ./scripts/test.sh                                 # measures on every host; writes test_out/support_matrix-<version>.json
    python scripts/support_matrix.py                  # prints the markdown
    python scripts/support_matrix.py --write          # replaces the part of README.md between the markers
    python scripts/support_matrix.py --check          # exit 1 if README.md's part differs or a cell failed

The node columns show the newest host's figures, ✓ where the cell passed on every host that ran it; each host column
says whether every cell passed there.

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
    # ComfyUI 0.30+ (tests/hostlib.py NEWER_FAMILIES)
    "flux2": "Flux.2", "flux2_klein": "Flux.2 Klein", "z_image": "Z-Image",
    "qwen_image_edit": "Qwen-Image-Edit 2511 (reference latent)", "longcat_image": "LongCat-Image",
    "kandinsky5_image": "Kandinsky 5 Image", "ernie_image": "Ernie-Image", "krea2": "Krea 2", "anima": "Anima",
    "joyimage": "JoyImage", "mage_flow": "MageFlow", "boogu": "Boogu", "ideogram4": "Ideogram 4", "lens": "Lens",
    "hidream_o1": "HiDream-O1 (pixels, noise ×8)", "z_image_pixel": "Z-Image pixel space",
    "pixeldit": "PixelDiT (pixels)", "hunyuan_video15": "HunyuanVideo 1.5", "kandinsky5": "Kandinsky 5 (video)",
    "wan_dancer": "Wan 2.2 WanDancer", "cogvideox": "CogVideoX (v, zero SNR)", "ltxav": "LTX-2 (video latent)",
}
REFUSED = {"lotus": "Lotus (x0 prediction)", "img_to_img_flow": "ComfyUI 0.38 IMG_TO_IMG_FLOW/VELOCITY (simulated)",
           "stable_cascade": "Stable Cascade stages",
           "wan21_flowrvs": "Wan 2.1 FlowRVS (real IMG_TO_IMG_FLOW, ComfyUI 0.30+)"}
THRESHOLDS = "round trips ≤ 1e-2 (fixed point) and ≤ 1e-4 (BDIA, O-BELM) relative; gradients within 2e-2 of a " \
             "central difference; attention edits within 1e-5 of the plain regeneration"


def _cell(row, key, fmt):
    cell = row.get(key)
    if cell is None:
        return "—"
    if cell.get("na"):  # measured as not applicable to the tiny model; the value says why
        return f"— ({cell['value']})"
    return ("✓ " if cell["ok"] else "✗ ") + fmt(cell["value"])


def _err(v):
    return f"{v:.0e}".replace("e-0", "e-")


def _version_key(version):
    return tuple(int(p) if p.isdigit() else 0 for p in str(version).split("."))


def _merged_cell(rows, key):
    """The newest host's cell, ok only where every host that measured it passed."""
    cells = [row[key] for row in rows if key in row]
    return None if not cells else {**cells[0], "ok": all(c["ok"] for c in cells)}


def _host_cell(row):
    if not row:
        return "— (not in this ComfyUI)"
    bad = [col for col, cell in row.items() if not cell["ok"]]
    return "✓" if not bad else "✗ " + ", ".join(bad)


def render(datas):
    """The matrix for one host's data or a list of them (one per host)."""
    datas = sorted(datas if isinstance(datas, list) else [datas], key=lambda d: _version_key(d.get("comfyui")),
                   reverse=True)
    hosts = [d.get("comfyui", "?") for d in datas]
    head = ("| Family | Sampling (frame) | Latent | Fixed-Point Invert | BDIA / O-BELM Invert + Sampler | "
            "Oscillation / Group Inversion | Post-Inversion Optimize | Gradients | Fine-Tune Inversion | "
            "Attention Edit | " + " | ".join(f"ComfyUI {h}" for h in hosts) + " |")
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for key, name in FAMILIES.items():
        per_host = [d["families"].get(key, {}) for d in datas]
        measured = [r for r in per_host if r]
        if not measured:
            continue
        row = {k: _merged_cell(measured, k) for r in measured for k in r}
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
            _cell(row, "fine_tune", lambda v: f"{v} q/k layers"), _cell(row, "attention_edit", _err),
        ] + [_host_cell(r) for r in per_host]) + " |")
    refused = []
    for key, label in REFUSED.items():
        cells = [d["families"][key]["refused"] for d in datas if key in d["families"]]
        if cells:
            kind, reason = cells[0]["value"].split(": ", 1)
            refused.append(f"- {'✓' if all(c['ok'] for c in cells) else '✗'} {label}: `{kind}`, {reason}")
    text = [f"Measured by `tests/host/test_host_families.py` on tiny random-weight models built with each ComfyUI's own "
            f"classes ({', '.join(hosts)}; 8×8 latents, 2 frames for video; PixArt 48×48; pixel-space families "
            f"16×16 pixels, HiDream-O1 64×64), through stock "
            f"SamplerCustomAdvanced. Numbers (from ComfyUI {hosts[0]}) are relative round-trip errors, the period "
            f"found, the loss ratio after 6 optimisation steps, the relative gap between autograd and a central "
            f"difference, and how far a same-prompt attention edit with full injection lands from the plain "
            f"regeneration (— (masked edit only): the family keeps the masked edit alone); ✓ means within the "
            f"test's threshold on every host ({THRESHOLDS}), — not measured. A host column says whether every cell "
            f"passed on that ComfyUI.", ""] + lines
    if refused:
        text += ["", "Refused by every node on every host that has them, with a ValueError naming the node, the input "
                     "`model` and the model sampling type:"] + refused
    return "\n".join(text) + "\n"


COLUMNS = ("fixed_point", "bdia", "o-belm", "bdia_cfg", "oscillation", "group", "optimize", "gradient", "fine_tune",
           "attention_edit")


def failed(data):
    """Cells that failed their threshold, and cells or refusals that were not measured (one host's data), among the
    families that host has ('available', written by the tests; every one where absent)."""
    families, available = data["families"], set(data.get("available", list(FAMILIES) + list(REFUSED)))
    problems = [f"{fam}.{col} failed" for fam, row in families.items() for col, cell in row.items() if not cell["ok"]]
    problems += [f"{fam}.{col} not measured" for fam in FAMILIES if fam in available for col in COLUMNS
                 if col not in families.get(fam, {})]
    return problems + [f"{fam} refusal not measured" for fam in REFUSED if fam in available and fam not in families]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=pathlib.Path, nargs="*",
                        default=sorted((ROOT / "test_out").glob("support_matrix-*.json")),
                        help="one measurement per host (default: test_out/support_matrix-*.json)")
    parser.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README part between the markers")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README part differs or a cell failed")
    args = parser.parse_args()
    if not args.json or not all(p.is_file() for p in args.json):
        sys.exit("no measurement found: run ./scripts/test.sh (or python -m pytest tests/host/test_host_families.py) first")
    datas = [json.loads(p.read_text()) for p in args.json]
    table = render(datas)
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
        problems = [f"ComfyUI {d.get('comfyui')}: {p}" for d in datas for p in failed(d)]
        if updated != readme:
            problems.append(f"{args.readme.name}'s support matrix differs from the measurements: run "
                            f"scripts/support_matrix.py --write")
        if problems:
            sys.exit("support matrix: " + "; ".join(problems))
        print("support matrix: README matches the measurement, every cell passed")
        return
    args.readme.write_text(updated)
    print(f"wrote the support matrix into {args.readme}")


if __name__ == "__main__":
    main()
