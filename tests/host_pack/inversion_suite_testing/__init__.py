"""Test-only ComfyUI nodes: tiny random-weight models, conditioning and latents, so workflows run without
weights or text encoders. Loaded only by the server tests (never shipped in the node pack's registry)."""
import pathlib
import sys

from comfy_api.v0_0_2 import ComfyExtension, io

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import hostlib  # noqa: E402

FAMILY = lambda: io.Combo.Input("family", options=hostlib.FAMILIES + ["wan21"], tooltip="Tiny model family.")  # noqa: E731


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


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [TinyModel, TinyCond, TinyLatent]


async def comfy_entrypoint():
    return Extension()
