"""Host tier: PostInversionOptimize and FineTuneInversion through tiny SD1.5-like, SD3 and Flux models, inside
torch.inference_mode() with inference-tensor weights, as the server runs them."""
import pytest
import torch

import hostlib

hostlib.require_comfyui()

import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402

from inversion_suite.nodes.grad import _checkpointed_block, differentiable, dit_blocks
from inversion_suite.nodes.host import training  # noqa: E402
from inversion_suite.nodes.optimize import FineTuneInversion, PostInversionOptimize  # noqa: E402

SIGMA = {"sd15": 1.0, "sd3": 0.4, "flux": 0.4}
ABSENT = "absent"


def served(family):
    """A tiny model built as a loader node builds it inside the server: in torch.inference_mode(), so every weight
    is an inference tensor."""
    with torch.inference_mode():
        model = hostlib.tiny_model(family)
    assert all(p.is_inference() for p in model.model.parameters())
    return model


@pytest.fixture(scope="module")
def loaded(family):
    return served(family)


def snapshot(model):
    return {k: v.clone() for k, v in model.model.state_dict().items()}


def optimize(model, family, **change):
    args = dict(model=model, latent=hostlib.image_latent(family, seed=2), target_1=hostlib.image_latent(family, seed=3),
                weight_1=1.0, weight_2=0.0, steps=6, rounds=10, lr_noise=0.05, lr_image=0.01, sigma=SIGMA[family],
                sigma_mode="absolute", gradient_checkpointing=True, guider=hostlib.guider(model, family))
    args.update(change)
    with torch.inference_mode():
        return PostInversionOptimize.execute(**args).args


def fine_tune(model, family, **change):
    args = dict(model=model, latent=hostlib.image_latent(family, seed=2), target=hostlib.image_latent(family, seed=3),
                steps=2, learning_rate=0.01, rank=2, seed=0, sigma=SIGMA[family], sigma_mode="absolute",
                gradient_checkpointing=True, guider=hostlib.guider(model, family))
    args.update(change)
    with torch.inference_mode():
        return FineTuneInversion.execute(**args).args


@pytest.mark.parametrize("checkpointing", [True, False])
def test_loss_falls_and_weights_are_untouched(family, loaded, checkpointing):
    if family == "flux" and not checkpointing:
        with pytest.raises(ValueError, match="PostInversionOptimize: input 'gradient_checkpointing' must be on"):
            optimize(loaded, family, gradient_checkpointing=False)
        return
    before = snapshot(loaded)
    optimized, state, curve, report = optimize(loaded, family, gradient_checkpointing=checkpointing,
                                               target_2=hostlib.image_latent(family, seed=4), weight_2=0.5)
    first, last = (float(v) for v in report.split("loss ")[1].split(" (")[0].split(" → "))
    print(f"{family} checkpointing={checkpointing}: {report}")
    assert last <= 0.5 * first
    assert optimized["samples"].shape == state["samples"].shape == hostlib.image_latent(family)["samples"].shape
    assert torch.isfinite(optimized["samples"]).all() and curve.shape[-1] == 3
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_reach_the_optimised_tensor(family, loaded):
    """Autograd through the differentiable clone matches a finite difference of the model itself."""
    grad_model = differentiable(loaded, checkpointing=family != "sd15")
    latent = hostlib.image_latent(family)["samples"]
    with training():
        found = hostlib.autograd_against_difference(hostlib.guider(grad_model, family), latent, SIGMA[family],
                                                    eps=1e-3)
    assert found["norm"] > 0
    assert abs(found["grad"] - found["fd"]) <= 1e-2 * abs(found["fd"]) + 1e-6


def test_fine_tune_moves_prediction_and_leaves_input_model(family, loaded):
    latent, target = hostlib.image_latent(family, seed=2), hostlib.image_latent(family, seed=3)
    sigma = SIGMA[family]

    def one_step(model):
        guider = hostlib.guider(model, family)
        with torch.inference_mode():
            import comfy.samplers
            result = {}

            class OneStep(comfy.samplers.Sampler):
                def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
                           denoise_mask=None, disable_pbar=False):
                    ms = model_wrap.inner_model.model_sampling
                    scale = float(ms.noise_scaling(torch.tensor(sigma), torch.zeros(1), torch.ones(1)).flatten()[0])
                    result["d"] = model_wrap(latent_image * scale, torch.full((latent_image.shape[0],), sigma),
                                             **extra_args)
                    return latent_image
            guider.sample(torch.zeros_like(latent["samples"]), latent["samples"].clone(), OneStep(),
                          torch.tensor([sigma, 0.0]))
            y = model.get_model_object("process_latent_in")(target["samples"])
            return result["d"], float((result["d"] - y).square().mean())
    d_before, err_before = one_step(loaded)
    with torch.inference_mode():
        tuned, curve, report = FineTuneInversion.execute(
            model=loaded, latent=latent, target=target, steps=30, learning_rate=0.1, rank=4, seed=0, sigma=sigma,
            sigma_mode="absolute", gradient_checkpointing=True, guider=hostlib.guider(loaded, family)).args
    _, err_tuned = one_step(tuned)
    d_again, _ = one_step(loaded)
    print(f"{family}: {report}; one-step error {err_before:.4g} -> {err_tuned:.4g}")
    # tiny random models attend almost uniformly, so query/key adapters have little leverage: a small but
    # certain move toward the target
    assert err_tuned < 0.998 * err_before
    assert torch.equal(d_again, d_before)


def test_bad_input_is_a_clear_error():
    family, loaded = "sd3", hostlib.tiny_model("sd3")
    with pytest.raises(ValueError, match=r"PostInversionOptimize: input 'target_1' must have the same shape as the latent"):
        optimize(loaded, family, target_1=hostlib.image_latent(family, size=8))
    with pytest.raises(ValueError, match=r"PostInversionOptimize: input 'weight_2' must be 0 when target_2 is not"):
        optimize(loaded, family, weight_2=0.5)
    with pytest.raises(ValueError, match=r"PostInversionOptimize: input 'lr_noise' must be in \[0.001, 10.0\]"):
        optimize(loaded, family, lr_noise=0.0)
    with pytest.raises(ValueError, match=r"PostInversionOptimize: input 'steps' must be in \[1, 1000\]"):
        optimize(loaded, family, steps=0)


# ---------------------------------------------------------------- issue 14: repeated runs on a served model
def patch_state(model):
    """Everything a node could add to a ModelPatcher: weight patches, object patches, wrappers, model options."""
    return (model.patches_uuid, {k: [id(p) for p in v] for k, v in model.patches.items()},
            {k: id(v) for k, v in model.object_patches.items()},
            {k: [id(f) for f in v] for k, v in model.weight_wrapper_patches.items()}, repr(model.model_options))


def stock_run(model, family):
    """A plain stock SamplerCustomAdvanced run (random noise, Euler, 2 steps)."""
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    with torch.inference_mode():
        return hostlib.stock_sample(Noise_RandomNoise(11), hostlib.guider(model, family), hostlib.euler(),
                                    hostlib.sigmas(model, steps=2), hostlib.image_latent(family, size=8, seed=9))


@pytest.mark.parametrize("node", ["PostInversionOptimize", "FineTuneInversion"])
def test_three_runs_in_a_row_on_a_served_model(family, node):
    """Issue 14: weights made in inference mode; each run after the first used to fail with 'Inference tensors
    cannot be saved for backward' (the live module still held the previous run's copies). Every run succeeds and
    the input model is unchanged: weights bitwise, patches, and a stock sampler's output bitwise."""
    model = served(family)
    weights, patches, reference = snapshot(model), patch_state(model), stock_run(model, family)
    tuned = []
    for run in range(3):
        if node == "PostInversionOptimize":
            optimized, state, _, report = optimize(model, family, steps=2, rounds=1)
            assert torch.isfinite(optimized["samples"]).all() and torch.isfinite(state["samples"]).all()
        else:
            tuned.append(fine_tune(model, family)[0])
    for t in tuned:
        assert t is not model and torch.isfinite(stock_run(t, family)).all()
    after = model.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert patch_state(model) == patches
    assert torch.equal(stock_run(model, family), reference)


# ---------------------------------------------------------------- issue 8: ComfyUI 0.38
def training_probe(model, interrupt_at=None):
    """A clone of ``model`` whose model wrapper records ``comfy.model_management.in_training`` at every forward, and
    through a gradient hook on the output at every backward; with ``interrupt_at`` that call raises."""
    seen = {"forward": [], "backward": []}

    def wrapper(apply_model, args):
        seen["forward"].append(getattr(mm, "in_training", ABSENT))
        if len(seen["forward"]) == interrupt_at:
            raise RuntimeError("probe: failing inside the model")
        out = apply_model(args["input"], args["timestep"], **args["c"])
        if out.requires_grad:
            out.register_hook(lambda grad: seen["backward"].append(getattr(mm, "in_training", ABSENT)))
        return out
    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, seen


@pytest.mark.parametrize("node", ["PostInversionOptimize", "FineTuneInversion"])
@pytest.mark.parametrize("prior", [ABSENT, False])
def test_in_training_is_set_for_forward_and_backward_and_restored(node, prior, monkeypatch):
    """0.38's fused Flux kernels have autograd only while comfy.model_management.in_training is set: it must be True
    in every forward and backward of the optimisation, and afterwards what it was (absent on 0.3.64, False on
    0.38), also when the run fails."""
    if prior is ABSENT:
        monkeypatch.delattr(mm, "in_training", raising=False)
    else:
        monkeypatch.setattr(mm, "in_training", prior, raising=False)
    model = served("flux")
    run = (lambda m: optimize(m, "flux", steps=2, rounds=1)) if node == "PostInversionOptimize" else (
        lambda m: fine_tune(m, "flux"))
    patched, seen = training_probe(model)
    run(patched)
    assert len(seen["forward"]) >= 2 and len(seen["backward"]) == 2
    assert set(seen["forward"]) == set(seen["backward"]) == {True}
    assert getattr(mm, "in_training", ABSENT) is prior
    failing, seen = training_probe(model, interrupt_at=2)
    with pytest.raises(RuntimeError, match="probe: failing inside the model"):
        run(failing)
    assert seen["forward"] == [True, True] and getattr(mm, "in_training", ABSENT) is prior


def test_checkpoint_recomputation_sees_the_blocks_own_transformer_options():
    """ComfyUI 0.38's Flux writes block_type/block_index into one transformer_options dict before each block; a
    checkpointed block recomputed in backward must see its own values, not the last block's. Built on 0.3.64: a
    'dit' replace stamps the shared dict as 0.38 does, an attention override records what each attention call sees
    (forward: double, single; backward recomputes in reverse: single, double)."""
    import comfy.samplers
    model = served("flux")
    grad_model = differentiable(model, checkpointing=True)
    seen = []

    def override(func, *args, **kwargs):
        options = kwargs["transformer_options"]
        seen.append((options.get("block_type"), options.get("block_index")))
        return func(*args, **kwargs)
    grad_model.model_options["transformer_options"]["optimized_attention_override"] = override
    for kind, count in dit_blocks(grad_model):
        for i in range(count):
            def stamped(args, extra, kind=kind, i=i):
                args["transformer_options"].update(block_type=kind, block_index=i)
                return _checkpointed_block(args, extra)
            grad_model.set_model_patch_replace(stamped, "dit", kind, i)

    class Backward(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            with torch.inference_mode(False), torch.enable_grad(), training():
                z = latent_image.clone().requires_grad_(True)
                model_wrap(z, sigmas[:1].expand(z.shape[0]), **extra_args).square().mean().backward()
            return latent_image
    latent = hostlib.image_latent("flux", size=8)["samples"]
    with torch.inference_mode():
        hostlib.guider(grad_model, "flux").sample(torch.zeros_like(latent), latent, Backward(),
                                                  torch.tensor([0.4, 0.0]))
    blocks = [("double_block", 0), ("single_block", 0)]
    assert seen == blocks + blocks[::-1]


class Dynamic(comfy.model_patcher.ModelPatcher):
    """0.38's ModelPatcherDynamic, simulated: dynamic, and ``clone(disable_dynamic=True)`` gives a plain patcher."""
    clones = []

    def is_dynamic(self):
        return True

    def clone(self, disable_dynamic=False):
        Dynamic.clones.append(disable_dynamic)
        n = super().clone()
        if disable_dynamic:
            n.__class__ = comfy.model_patcher.ModelPatcher
        return n


class DynamicWithoutInit(Dynamic):
    """A dynamic patcher ComfyUI cannot make non-dynamic (0.38: no cached_patcher_init)."""

    def clone(self, disable_dynamic=False):
        if disable_dynamic:
            raise RuntimeError("Cannot create non-dynamic delegate: cached_patcher_init is not initialized.")
        return super().clone()


class DynamicOldClone(comfy.model_patcher.ModelPatcher):
    """A dynamic patcher whose clone has no disable_dynamic argument."""

    def is_dynamic(self):
        return True

    def clone(self):
        return super().clone()


def as_patcher(cls, model):
    return cls(model.model, load_device=model.load_device, offload_device=model.offload_device)


def test_dynamic_vram_model_is_cloned_non_dynamic():
    model = served("sd3")
    Dynamic.clones.clear()
    dynamic = as_patcher(Dynamic, model)
    grad_model = differentiable(dynamic, checkpointing=True)
    assert Dynamic.clones == [True] and type(grad_model) is comfy.model_patcher.ModelPatcher
    assert not getattr(grad_model, "is_dynamic", lambda: False)()
    Dynamic.clones.clear()
    optimized, _, _, report = optimize(dynamic, "sd3", steps=2, rounds=1)
    assert Dynamic.clones == [True] and torch.isfinite(optimized["samples"]).all()


@pytest.mark.parametrize("cls", [DynamicWithoutInit, DynamicOldClone])
def test_dynamic_vram_model_that_stays_dynamic_is_refused(cls):
    dynamic = as_patcher(cls, served("sd3"))
    with pytest.raises(ValueError, match=r"PostInversionOptimize: input 'model' is a Dynamic VRAM model .*"
                                         r"start ComfyUI with --disable-dynamic-vram"):
        optimize(dynamic, "sd3", steps=2, rounds=1)
    with pytest.raises(ValueError, match=r"FineTuneInversion: input 'model' is a Dynamic VRAM model .*"
                                         r"--disable-dynamic-vram"):
        fine_tune(dynamic, "sd3")


class DynamicWithDelegate(comfy.model_patcher.ModelPatcher):
    """0.30/0.38's ModelPatcherDynamic, simulated: ``clone(disable_dynamic=True)`` without a model override runs the
    checkpoint loader again (``cached_patcher_init``: a disk read and a second copy of the model in RAM), while
    ``get_non_dynamic_delegate()`` does that once and caches the loaded model for later clones."""
    loads = 0

    def is_dynamic(self):
        return True

    def clone(self, disable_dynamic=False, model_override=None):
        n = super().clone()
        if disable_dynamic:
            if model_override is None:
                DynamicWithDelegate.loads += 1
                model_override = self.model
            n.__class__, n.model = comfy.model_patcher.ModelPatcher, model_override
        return n

    def get_non_dynamic_delegate(self):
        p = self.clone(disable_dynamic=True, model_override=getattr(self, "delegate_model", None))
        self.delegate_model = p.model
        return p


def test_dynamic_vram_model_is_loaded_once_for_gradients():
    """Under Dynamic VRAM the optimisation nodes take ComfyUI's cached non-dynamic delegate: the checkpoint is loaded
    once, not on every run (0.38's ``clone(disable_dynamic=True)`` reloads it from disk each time)."""
    dynamic = as_patcher(DynamicWithDelegate, served("sd3"))
    DynamicWithDelegate.loads = 0
    for _ in range(2):
        optimized = optimize(dynamic, "sd3", steps=2, rounds=1)[0]
        fine_tune(dynamic, "sd3")
        assert torch.isfinite(optimized["samples"]).all()
    assert DynamicWithDelegate.loads == 1


def test_training_differentiates_fused_kernels_and_leaves_plain_forwards_alone():
    """comfy-kitchen's fused RoPE + RMS norm (ComfyUI 0.30+; Cosmos Predict2 and Anima call it whatever
    ``in_training`` says) has no autograd formula: inside ``training()`` it runs through comfy-kitchen's eager backend,
    with the same forward value and a gradient equal to a finite difference; outside, calls pass unchanged (the same
    error as before). On a host without comfy-kitchen (0.3.64) ``training()`` sets and removes ``in_training``."""
    try:
        import comfy_kitchen as ck
    except ImportError:
        with training():
            assert mm.in_training is True
        assert not hasattr(mm, "in_training")
        return
    from comfy_kitchen.backends import eager
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 6, 8, generator=g) for _ in range(2))
    angles = torch.randn(1, 1, 6, 4, generator=g)
    c, s = angles.cos(), angles.sin()                        # rotation matrices [1, 1, T, D/2, 2, 2]
    freqs = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    scale = torch.rand(8, generator=g) + 0.5
    plain = ck.rms_rope_split_half(q, k, freqs, scale, scale, 1e-6)
    qg = q.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        sum(t.square().sum() for t in ck.rms_rope_split_half(qg, k, freqs, scale, scale, 1e-6)).backward()
    with training():
        out = ck.rms_rope_split_half(qg, k, freqs, scale, scale, 1e-6)
        sum(t.square().sum() for t in out).backward()
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(out, plain))
    v = torch.randn(q.shape, generator=g)

    def loss(x):  # the same formula in float64
        return float(sum(t.square().sum() for t in eager.rms_rope_split_half(
            x, k.double(), freqs.double(), scale.double(), scale.double(), 1e-6)))
    fd = (loss(q.double() + 1e-6 * v.double()) - loss(q.double() - 1e-6 * v.double())) / 2e-6
    assert abs(float((qg.grad * v).sum()) - fd) <= 1e-4 * abs(fd)
    assert not torch._C._is_torch_function_mode_enabled()
