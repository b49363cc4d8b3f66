"""Agreement of lemmata's GRPO core with TRL 1.16's GRPOTrainer, and SLAS in TRL.

Each test drives TRL's own code (``_generate_and_score_completions`` and
``compute_loss`` of a real trainer instance over a tiny Llama) on inputs that are
also fed to :mod:`lemmata.posttrain.grpo`.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from lemmata.posttrain._models import tiny_causal_lm  # noqa: E402
from lemmata.posttrain.grpo import (  # noqa: E402
    group_advantages,
    policy_loss,
    slas_advantages,
)

G = 4
PROMPTS = ["w1 w2", "w3 w4 w5", "w6"]
# Group 1 is constant (zero std); group 2 has a NaN (unscorable) sample.
PRESET = [1.0, 2.0, 3.0, 5.0, 0.5, 0.5, 0.5, 0.5, -1.0, 4.0, float("nan"), 2.5]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(30)] + ["<pad>", "<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    return tok, vocab


class _Reward:
    """Reward function returning preset values and recording what it returned."""

    __name__ = "preset"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, **kwargs):
        values = [None if v != v else v for v in PRESET[: len(completions)]]
        self.calls.append(values)
        return values


def _trainer(cls, tmp_path, **extra):
    from datasets import Dataset
    from trl import GRPOConfig

    tok, vocab = _tokenizer()
    model = tiny_causal_lm(
        len(vocab),
        hidden_size=32,
        num_heads=2,
        special_tokens={
            "pad_token_id": vocab["<pad>"],
            "eos_token_id": vocab["<eos>"],
            "bos_token_id": vocab["<eos>"],
        },
    )
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(PROMPTS) * G,
        num_generations=G,
        max_completion_length=5,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        max_steps=1,
        **extra,
    )
    reward = _Reward()
    dataset = Dataset.from_dict({"prompt": PROMPTS * G})
    trainer = cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        **({} if cls is trl.GRPOTrainer else {"slas_gamma": 1.0}),
    )
    # Set by transformers' training loop; compute_loss reads it outside training.
    trainer.current_gradient_accumulation_steps = 1
    return trainer, reward


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    return _trainer(trl.GRPOTrainer, tmp_path_factory.mktemp("grpo"))


def _batch():
    return [{"prompt": p} for p in PROMPTS for _ in range(G)]


def _recorded(reward):
    return torch.tensor([float("nan") if v is None else v for v in reward.calls[-1]])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(trl_trainer, scale):
    trainer, reward = trl_trainer
    trainer.scale_rewards = scale
    out = trainer._generate_and_score_completions(_batch())
    ours = group_advantages(_recorded(reward), G, scale=scale)
    torch.testing.assert_close(out["advantages"], ours, atol=1e-6, rtol=0)


def test_slas_at_gamma_zero_is_trl_batch(trl_trainer):
    trainer, reward = trl_trainer
    trainer.scale_rewards = "batch"
    out = trainer._generate_and_score_completions(_batch())
    ours = slas_advantages(_recorded(reward), G, gamma=0.0, clip=None)
    torch.testing.assert_close(out["advantages"], ours, atol=1e-6, rtol=0)


def _our_logps(model, inputs):
    """Per-token log-probs of the completion, computed without TRL."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    n = inputs["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=attn).logits[:, -n - 1 : -1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)


LOSS_CASES = [
    ("grpo", 0.0, "token"),
    ("bnpo", 0.0, "token"),
    ("dr_grpo", 0.0, "token"),
    ("dapo", 0.0, "token"),
    ("grpo", 0.04, "token"),
    ("dapo", 0.1, "token"),
    ("grpo", 0.0, "sequence"),
]


@pytest.fixture(scope="module")
def generated(trl_trainer):
    trainer, _ = trl_trainer
    trainer.scale_rewards = "group"
    return trainer._generate_and_score_completions(_batch())


@pytest.mark.parametrize(("loss_type", "beta", "level"), LOSS_CASES)
def test_policy_loss_matches_trl(trl_trainer, generated, loss_type, beta, level):
    trainer, _ = trl_trainer
    gen = torch.Generator().manual_seed(3)
    inputs = {k: v.clone() for k, v in generated.items() if torch.is_tensor(v)}
    inputs.pop("old_per_token_logps", None)
    mask = inputs["completion_mask"]
    # A ragged mask so the reductions differ.
    mask[0, 2:] = 0
    mask[5, 1:] = 0
    inputs["completion_mask"] = mask
    shape = mask.shape
    inputs["advantages"] = torch.randn(shape[0], generator=gen)
    with torch.no_grad():
        current = _our_logps(trainer.model, inputs)
    old = current + 0.3 * torch.randn(shape, generator=gen)
    ref = current + 0.5 * torch.randn(shape, generator=gen)
    inputs["old_per_token_logps"] = old
    inputs["ref_per_token_logps"] = ref
    inputs["num_items_in_batch"] = mask.sum()

    trainer.loss_type, trainer.beta = loss_type, beta
    trainer.importance_sampling_level = level
    trainer.model.train()
    try:
        trl_loss = trainer.compute_loss(trainer.model, inputs)
    finally:
        # Generation with beta != 0 would need a reference model this trainer lacks.
        trainer.beta = 0.0

    ours, _ = policy_loss(
        _our_logps(trainer.model, inputs),
        old,
        inputs["advantages"],
        mask,
        loss_type=loss_type,
        beta=beta,
        ref_logps=ref,
        importance_sampling_level=level,
        max_completion_length=trainer.max_completion_length,
        num_items_in_batch=mask.sum(),
    )
    torch.testing.assert_close(trl_loss.detach(), ours.detach(), atol=1e-6, rtol=0)


def test_slas_trainer_shapes_trl_advantages(tmp_path):
    from lemmata.posttrain._trl_grpo import SLASGRPOTrainer

    trainer, reward = _trainer(SLASGRPOTrainer, tmp_path, scale_rewards="group")
    assert trainer.scale_rewards == "batch"
    out = trainer._generate_and_score_completions(_batch())
    expected = slas_advantages(_recorded(reward), G, gamma=1.0, clip=5.0)
    torch.testing.assert_close(out["advantages"], expected, atol=1e-6, rtol=0)


def test_slas_trainer_trains_one_step(tmp_path):
    from lemmata.posttrain._trl_grpo import SLASGRPOTrainer

    trainer, _ = _trainer(SLASGRPOTrainer, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "slas/clip_frac" in logged
    changed = any(
        not torch.equal(b, p)
        for b, p in zip(before, trainer.model.parameters(), strict=True)
    )
    assert changed


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"slas_gamma": -0.5}, ValueError, r"slas_gamma must be >= 0\.0; got -0\.5"),
        ({"slas_clip": 0.0}, ValueError, r"slas_clip must be > 0\.0; got 0\.0"),
        ({"slas_gamma": "1"}, TypeError, r"slas_gamma must be a real number; got str"),
    ],
)
def test_slas_trainer_bad_inputs(kwargs, exc, pattern):
    from lemmata.posttrain._trl_grpo import SLASGRPOTrainer

    with pytest.raises(exc, match=pattern):
        SLASGRPOTrainer(model=None, **kwargs)
