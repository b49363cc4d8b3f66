"""FDPOTrainer / MIOTrainer against TRL 1.16's own DPOTrainer on a tiny Llama."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from lemmata.posttrain._dpo_trainer import FDPOTrainer, MIOTrainer  # noqa: E402
from lemmata.posttrain._models import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.skipif(
    trl.__version__ != "1.16.0",
    reason="agreement tests are written against trl==1.16.0",
)

WORDS = ["<pad>", "<eos>", "a", "b", "c", "d", "e", "=", "yes", "no"]


def _tokenizer():
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>"
    )


def _dataset(n=8):
    letters = "abcde"
    rows = []
    for i in range(n):
        prompt = " ".join(letters[(i + k) % 5] for k in range(1 + i % 3)) + " ="
        rows.append(
            {
                "prompt": prompt,
                "chosen": " yes" + " a" * (i % 2),
                "rejected": " no" + " b c" * (i % 3),
            }
        )
    return datasets.Dataset.from_list(rows)


def _model(dtype=torch.float64):
    model = tiny_causal_lm(
        len(WORDS),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        special_tokens={"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0},
        seed=0,
    ).to(dtype)
    # Move the policy away from the reference so log-ratios are not all zero.
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _config(tmp_path, **kw):
    base = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "report_to": [],
        "per_device_train_batch_size": 8,
        "beta": 0.5,
        "save_strategy": "no",
        "logging_steps": 1,
        "dataset_num_proc": None,
    }
    base.update(kw)
    return DPOConfig(**base)


def _make(cls, tmp_path, cfg_kw=None, **kw):
    ref = tiny_causal_lm(
        len(WORDS),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        special_tokens={"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0},
        seed=0,
    ).double()
    return cls(
        model=_model(),
        ref_model=ref,
        args=_config(tmp_path, **(cfg_kw or {})),
        train_dataset=_dataset(),
        processing_class=_tokenizer(),
        **kw,
    )


def _loss_and_grads(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    return loss.detach(), grads, batch


CASES = [
    ("reverse_kl", 0.5, {}),
    ("forward_kl", 0.5, {}),
    ("jensen_shannon", 0.5, {}),
    # f-DPO's alpha 0.3 is TRL 1.16's f_alpha_divergence_coef 0.7.
    ("alpha", 0.3, {"f_alpha_divergence_coef": 0.7}),
]


@pytest.mark.parametrize(("divergence", "alpha", "extra"), CASES)
def test_fdpo_trainer_matches_trl_trainer(tmp_path, divergence, alpha, extra):
    ours = _make(FDPOTrainer, tmp_path / "a", divergence=divergence, alpha=alpha)
    trl_name = {"jensen_shannon": "js_divergence", "alpha": "alpha_divergence"}.get(
        divergence, divergence
    )
    dtype = torch.float64
    if divergence == "alpha":
        # TRL's alpha clamp table has no float64 key: compare in float32.
        dtype = torch.float32
        ours.model.float()
        ours.ref_model.float()
    theirs = _make(
        DPOTrainer, tmp_path / "b", cfg_kw={"f_divergence_type": trl_name, **extra}
    )
    theirs.model.to(dtype)
    theirs.ref_model.to(dtype)

    loss_a, grads_a, _ = _loss_and_grads(ours)
    loss_b, grads_b, _ = _loss_and_grads(theirs)
    assert loss_a.item() > 0.0
    tol = (
        {"rtol": 1e-6, "atol": 1e-6}
        if dtype == torch.float32
        else {"rtol": 0, "atol": 1e-6}
    )
    torch.testing.assert_close(loss_a, loss_b, **tol)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, **tol)
    # Same logged metrics as TRL.
    for key, values in theirs._metrics["train"].items():
        assert ours._metrics["train"][key] == pytest.approx(
            values, rel=1e-5, abs=1e-6
        ), key


def test_mio_trainer_is_half_bco_pair(tmp_path):
    ours = _make(MIOTrainer, tmp_path / "a")
    theirs = _make(DPOTrainer, tmp_path / "b", cfg_kw={"loss_type": ["bco_pair"]})
    loss_a, grads_a, _ = _loss_and_grads(ours)
    loss_b, grads_b, _ = _loss_and_grads(theirs)
    torch.testing.assert_close(2 * loss_a, loss_b, rtol=0, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(2 * ga, gb, rtol=0, atol=1e-6)


def test_padding_does_not_change_loss(tmp_path):
    trainer = _make(FDPOTrainer, tmp_path, divergence="jensen_shannon")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    # Five more columns of right padding (pad id 0, masks 0).
    padded = {k: torch.nn.functional.pad(v, (0, 5)) for k, v in batch.items()}
    with torch.no_grad():
        a = trainer.compute_loss(trainer.model, batch)
        b = trainer.compute_loss(trainer.model, padded)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_train_two_steps_and_log(tmp_path, caplog):
    trainer = _make(
        FDPOTrainer,
        tmp_path,
        cfg_kw={"max_steps": 2, "learning_rate": 1e-2},
        divergence="jensen_shannon",
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with caplog.at_level(logging.WARNING):
        out = trainer.train()
    assert out.global_step == 2
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    assert len(logged) == 2 and all(
        torch.isfinite(torch.tensor(h["loss"])) for h in logged
    )


BAD = [
    ({"divergence": "chi2"}, {}, ValueError, r"divergence must be one of .*got 'chi2'"),
    (
        {"divergence": "alpha", "alpha": 1.5},
        {},
        ValueError,
        r"alpha must be in \(0, 1\); got 1\.5",
    ),
    (
        {},
        {"loss_type": ["ipo"]},
        ValueError,
        r"FDPOTrainer replaces TRL's loss, so args.loss_type must stay \['sigmoid'\]",
    ),
    (
        {},
        {"f_divergence_type": "forward_kl"},
        ValueError,
        r"args.f_divergence_type must stay 'reverse_kl'; got 'forward_kl'",
    ),
    ({}, {"ld_alpha": 0.5}, NotImplementedError, r"LD-DPO"),
    ({}, {"beta": 0.0}, ValueError, r"beta must be > 0"),
]


@pytest.mark.parametrize(("kw", "cfg_kw", "exc", "pattern"), BAD)
def test_fdpo_trainer_bad_inputs(tmp_path, kw, cfg_kw, exc, pattern):
    if "beta" in cfg_kw:
        # TRL accepts beta = 0; the loss rejects it at the first step.
        trainer = _make(FDPOTrainer, tmp_path, cfg_kw=cfg_kw, **kw)
        with pytest.raises(exc, match=pattern):
            _loss_and_grads(trainer)
        return
    with pytest.raises(exc, match=pattern):
        _make(FDPOTrainer, tmp_path, cfg_kw=cfg_kw, **kw)


def test_mio_trainer_bad_weight(tmp_path):
    with pytest.raises(
        ValueError, match=r"rejected_weight must be >= 0 and finite; got -1"
    ):
        _make(MIOTrainer, tmp_path, rejected_weight=-1)
