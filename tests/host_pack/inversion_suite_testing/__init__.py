"""Test-only ComfyUI nodes: tiny random-weight models, conditioning and latents, so workflows run without
weights or text encoders. Loaded only by the server tests (never shipped in the node pack's registry)."""
import hashlib
import json
import pathlib
import sys

import torch

from comfy_api.v0_0_2 import ComfyExtension, io

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # tests/ (hostlib)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "scripts"))  # workflow_tools
import hostlib  # noqa: E402
from workflow_tools import UNET_FAMILIES  # noqa: E402

# The families the bundled workflows stand in for; those of a newer ComfyUI where this one has their model class
FAMILY_OPTIONS = hostlib.FAMILIES + [f for f in dict.fromkeys(UNET_FAMILIES.values())
                                     if f not in hostlib.NEWER_FAMILIES or hostlib.on_host(f)]
FAMILY = lambda: io.Combo.Input("family", options=FAMILY_OPTIONS, tooltip="Tiny model family.")  # noqa: E731


class TinyModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InvTest_TinyModel", category="_for_testing", description="Tiny random model.",
                         inputs=[FAMILY()], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, family):
        return io.NodeOutput(hostlib.tiny_model(family))


class TinyCond(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InvTest_TinyCond", category="_for_testing", description="Tiny conditioning.",
                         inputs=[FAMILY(), io.Int.Input("seed", default=1, tooltip="Prompt seed.")],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, family, seed):
        return io.NodeOutput(hostlib.tiny_cond(family, seed))


class TinyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InvTest_TinyLatent", category="_for_testing", description="Tiny image latent.",
                         inputs=[FAMILY(), io.Int.Input("batch", default=2, tooltip="Batch size.")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, family, batch):
        return io.NodeOutput(hostlib.image_latent(family, batch))


def _digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ModelProbe(io.ComfyNode):
    """What the server tests need to see inside the server process: whether nodes run in inference mode, whether the
    loaded weights are inference tensors (a loader made them there), a checksum of the weights, and a stock Euler
    run's output on the model (the same every time while the model is unchanged); LATENTs are checked finite."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InvTest_ModelProbe", category="_for_testing", is_output_node=True,
                         description="Reports a model's weight checksum and a stock sampler run on it.",
                         inputs=[FAMILY(), io.Model.Input("model"),
                                 io.String.Input("tag", default="", tooltip="Vary it to make the probe run again."),
                                 io.Boolean.Input("sample", default=True, tooltip="Run the stock sampler(s): this "
                                                  "loads the model, which unpatches whatever clone was loaded."),
                                 io.Model.Input("other_model", optional=True, tooltip="Another model to sample."),
                                 io.Latent.Input("latent_1", optional=True),
                                 io.Latent.Input("latent_2", optional=True)],
                         outputs=[])

    @classmethod
    def stock(cls, model, family):
        noise = hostlib.image_latent(family, batch=1, seed=5)["samples"]
        samples = hostlib.stock_sample(hostlib.disable_noise(), hostlib.guider(model, family), hostlib.euler(),
                                       hostlib.sigmas(model, steps=3), {"samples": noise * 3.0})
        return samples

    @classmethod
    def execute(cls, family, model, tag, sample, other_model=None, latent_1=None, latent_2=None):
        report = {"tag": tag, "inference_mode": torch.is_inference_mode_enabled(), "model_id": id(model.model),
                  "patches": len(model.patches), "object_patches": len(model.object_patches)}
        if sample and other_model is not None:  # first, so the model below is loaded again after this one
            report["other_finite"] = bool(torch.isfinite(cls.stock(other_model, family)).all())
        if sample:
            stock = cls.stock(model, family)
            report.update(stock=_digest([stock]), stock_finite=bool(torch.isfinite(stock).all()))
        weights = model.model.state_dict()
        report.update(weights=_digest(weights[k] for k in sorted(weights)),
                      inference_weights=all(v.is_inference() for v in weights.values()))
        for name, latent in (("latent_1", latent_1), ("latent_2", latent_2)):
            if latent is not None:
                report[name] = {"shape": list(latent["samples"].shape),
                                "finite": bool(torch.isfinite(latent["samples"]).all())}
        return io.NodeOutput(ui={"text": [json.dumps(report)]})


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [TinyModel, TinyCond, TinyLatent, ModelProbe]


async def comfy_entrypoint():
    return Extension()
