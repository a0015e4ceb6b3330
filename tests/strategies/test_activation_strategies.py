"""The chunked loss, activation offload and activation compression as strategies: the plan's logits,
activation and host terms follow them, the backends that cannot honour them refuse them, and they are
offered as fixes."""

import pytest

from qcompile.backends import get_backend
from qcompile.backends.train_config import build_train_config
from qcompile.compiler.planner.plan import plan
from qcompile.compiler.rules import backend_rules
from qcompile.strategies.activation_compression import STRATEGY as COMPRESSION
from qcompile.strategies.activation_offload import STRATEGY as ACTIVATION_OFFLOAD
from qcompile.strategies.loss import STRATEGY as LOSS
from tests.compiler.planner.conftest import ROOT, context, spec_from

QWEN7B = ROOT / "examples" / "qwen7b-qlora-24gb.yaml"
NAIVE, ZERO2, ZERO3 = (get_backend(k) for k in ("naive-model-parallel", "deepspeed-zero2", "deepspeed-zero3"))
GiB = 2**30


def qwen7b(**changes):
    """Qwen1.5-7B in bf16 at seq 8192, attention-only LoRA, one 80 GiB GPU."""
    base = {"model.quantization": None, "training.optimizer": "adamw", "strategies.max_seq_length": 8192,
            "lora.target_modules": ["q_proj", "v_proj"], "hardware.device_memory": "80GiB",
            "hardware.host_memory": "256GiB"}
    return spec_from(QWEN7B, **{**base, **changes})


def planned(spec, backend=NAIVE):
    return plan(spec, context(spec, QWEN7B.parent).arch, backend)


def test_chunked_loss_cuts_the_logits_of_qwen7b_at_8192():
    standard = planned(qwen7b()).peak_device.breakdown
    chunked = planned(qwen7b(**{"strategies.loss": "chunked", "strategies.gradient_checkpointing": False}))
    tokens, vocab, hidden = 8192, 151_936, 4096
    assert standard["logits"] == 12 * tokens * vocab  # 13.9 GiB
    # one 1,024-token chunk's logits beside the bf16 hidden states and their gradient (the torch path is
    # the larger of it and liger-kernel's, whose chunk here is 256 tokens)
    assert chunked.peak_device.breakdown["logits"] == 12 * 1024 * vocab + 2 * 2 * tokens * hidden  # 1.9 GiB
    smaller = planned(qwen7b(**{"strategies.loss": "chunked", "strategies.loss_chunk_size": 256,
                                "strategies.gradient_checkpointing": False}))
    assert smaller.peak_device.breakdown["logits"] == 12 * 256 * vocab + 2 * 2 * tokens * hidden


@pytest.mark.parametrize("checkpointing", [True, False])
def test_activation_offload_moves_saved_tensors_to_the_host(checkpointing):
    plain = planned(qwen7b(**{"strategies.gradient_checkpointing": checkpointing}))
    moved = planned(qwen7b(**{"strategies.gradient_checkpointing": checkpointing,
                              "strategies.activation_offload": True}))
    kept = 32 * 2 * 8192 * 4096  # the checkpointed layer inputs, bf16
    added = moved.host.train_peak - plain.host.train_peak
    log_probs = 4 * 8192 * 151_936  # the standard loss's log-softmax output (back on the device for its backward)
    if checkpointing:
        assert added == kept + 4 * 8192 * 4096 + 4 * 8192 + log_probs  # and the final norm's fp32 input
    # what the host gains besides is what leaves the device's activation term (rope tables stay)
    left = plain.peak_device.breakdown["activations"] - moved.peak_device.breakdown["activations"]
    assert added - log_probs == left > (kept if not checkpointing else 0)
    assert moved.peak_device.peak < plain.peak_device.peak
    assert any("offloaded to host memory" in note for note in moved.notes)


def test_activation_offload_changes_nothing_on_a_cpu_node():
    spec = spec_from(**{"strategies.activation_offload": True, "hardware.accelerator": "cpu",
                        "strategies.mixed_precision": "bf16"})
    assert ACTIVATION_OFFLOAD.step_shape(spec) == {}
    assert ("activation_offload_on_cpu", "warning") in [(d.code, d.severity) for d in backend_rules(spec, NAIVE)]


@pytest.mark.parametrize("checkpointing", [True, False])
def test_compression_counts_one_byte_per_saved_element(checkpointing):
    plain = planned(qwen7b(**{"strategies.gradient_checkpointing": checkpointing}))
    packed = planned(qwen7b(**{"strategies.gradient_checkpointing": checkpointing,
                               "strategies.activation_compression": "int8"}))
    before, after = plain.peak_device.breakdown["activations"], packed.peak_device.breakdown["activations"]
    t, h = 8192, 4096
    if checkpointing:  # the kept bf16 layer inputs (plus a per-token scale) and the final norm's fp32 input
        assert before - after == 32 * (2 * t * h - (t * h + 4 * t)) + (4 * t * h + 4 * t) - (t * h + 8 * t)
    else:
        assert 0.3 * before < after < 0.5 * before


def test_the_backends_that_cannot_honour_the_chunked_loss_refuse_it():
    spec = qwen7b(**{"strategies.loss": "chunked"})
    [refusal] = [d for d in backend_rules(spec, ZERO3) if d.is_error]
    assert (refusal.code, refusal.path) == ("loss_unsupported", ("strategies", "loss"))
    assert "deepspeed-zero3" in refusal.message and "strategies.loss: standard" in refusal.hint
    assert not [d for d in backend_rules(spec, ZERO2) if d.is_error]
    assert not [d for d in backend_rules(spec, NAIVE) if d.is_error]
    assert LOSS.fixes(qwen7b(), ZERO3) == [] and LOSS.fixes(qwen7b(), NAIVE)


def test_fixes_and_train_config():
    spec = qwen7b()
    assert COMPRESSION.fixes(spec, NAIVE) == [("strategies.activation_compression: int8",
                                               {"strategies.activation_compression": "int8"})]
    assert ACTIVATION_OFFLOAD.fixes(spec, NAIVE)[0][1] == {"strategies.activation_offload": True}
    chunked = qwen7b(**{"strategies.loss": "chunked", "strategies.loss_chunk_size": 512})
    strategies = build_train_config(context(chunked, QWEN7B.parent).for_backend(NAIVE))["strategies"]
    assert (strategies["loss"], strategies["loss_chunk_size"]) == ("chunked", 512)
    assert (strategies["activation_offload"], strategies["activation_compression"]) == (False, "none")


def test_auto_turns_on_the_cheapest_lever_that_makes_a_backend_fit():
    from qcompile.compiler.checks import diagnose

    spec = qwen7b(**{"hardware.device_memory": "24GiB", "backend": {"kind": "auto"}})
    diags, narrowed = diagnose(context(spec, QWEN7B.parent))
    [said] = [d for d in diags if d.code == "auto_strategies"]
    assert said.severity == "warning" and "strategies.loss: chunked" in said.message
    assert narrowed.backend.kind == "deepspeed-zero2" and narrowed.spec.strategies.loss == "chunked"
    assert narrowed.plan.fits and narrowed.spec.strategies.activation_compression == "none"
    fits_as_written = qwen7b(**{"backend": {"kind": "auto"}})
    diags, narrowed = diagnose(context(fits_as_written, QWEN7B.parent))
    assert not [d for d in diags if d.code == "auto_strategies"] and narrowed.spec.strategies.loss == "standard"
