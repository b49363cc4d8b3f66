"""Unlearning objectives against float64 loops written from the papers' equations,
closed forms and gradient directions; the UnlearningTrainer's input checks and a
few-step smoke run on a tiny model."""

import math

import numpy as np
import pytest
import torch

from lemmata.posttrain._unlearning import (
    OBJECTIVES,
    dipo_loss,
    get_objective,
    graddiff_loss,
    gradient_ascent_loss,
    npo_loss,
    retain_nll,
    sequence_logps,
    simnpo_loss,
    topk_mask,
)


def _batch(rng, b=3, t=5, v=7, masked=True):
    logits = torch.tensor(rng.normal(size=(b, t, v)) * 2, dtype=torch.float64)
    ref = torch.tensor(rng.normal(size=(b, t, v)) * 2, dtype=torch.float64)
    labels = torch.tensor(rng.integers(0, v, size=(b, t)))
    if masked:
        labels[0, :2] = -100
        labels[-1, -1] = -100
    return logits, ref, labels


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def _seq_logp(logits, labels):
    """Summed log-probability and token count of one example, by a loop."""
    total, count = 0.0, 0
    for t in range(labels.shape[0]):
        if labels[t] != -100:
            total += _log_softmax(logits[t])[labels[t]]
            count += 1
    return total, count


def _logsigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def _dipo_reference(logits, ref, labels, beta, lam, k, normalize=False):
    """DiPO from its definition: top-k set, shifted softmaxes, expected log-ratios."""
    out = []
    for b in range(labels.shape[0]):
        delta, count = 0.0, 0
        for t in range(labels.shape[1]):
            if labels[b, t] == -100:
                continue
            z = ref[b, t]
            top = sorted(range(len(z)), key=lambda a: (-z[a], a))[:k]
            ind = np.zeros_like(z)
            ind[top] = 1.0
            p_plus = np.exp(_log_softmax(z - lam * ind))
            p_minus = np.exp(_log_softmax(z + lam * ind))
            h = _log_softmax(logits[b, t]) - _log_softmax(z)
            delta += float(p_plus @ h) - float(p_minus @ h)
            count += 1
        if normalize:
            delta /= max(count, 1)
        out.append(-(2 / beta) * _logsigmoid(beta * delta))
    return np.array(out)


def test_sequence_logps_matches_loop(rng):
    logits, _, labels = _batch(rng)
    logps, counts = sequence_logps(logits, labels)
    for b in range(labels.shape[0]):
        total, count = _seq_logp(logits[b].numpy(), labels[b].numpy())
        assert logps[b].item() == pytest.approx(total, rel=1e-12)
        assert counts[b].item() == count


def test_retain_nll_equals_hf_style_cross_entropy(rng):
    logits, _, labels = _batch(rng, b=1)
    expected = torch.nn.functional.cross_entropy(
        logits[0], labels[0], ignore_index=-100, reduction="mean"
    )
    assert retain_nll(logits, labels)[0].item() == pytest.approx(expected.item())
    assert gradient_ascent_loss(logits, labels)[0].item() == pytest.approx(
        -expected.item()
    )


def test_graddiff_combines_forget_ascent_and_retain_descent(rng):
    logits, ref, labels = _batch(rng)
    got = graddiff_loss(logits, labels, ref, labels, alpha=0.5, gamma=2.0)
    expected = []
    for b in range(3):
        f, nf = _seq_logp(logits[b].numpy(), labels[b].numpy())
        r, nr = _seq_logp(ref[b].numpy(), labels[b].numpy())
        expected.append(2.0 * f / nf + 0.5 * (-r / nr))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_npo_matches_loop(rng, beta):
    logits, ref, labels = _batch(rng)
    got = npo_loss(logits, labels, ref, beta=beta)
    for b in range(3):
        h = _seq_logp(logits[b].numpy(), labels[b].numpy())[0]
        h -= _seq_logp(ref[b].numpy(), labels[b].numpy())[0]
        assert got[b].item() == pytest.approx(-(2 / beta) * _logsigmoid(-beta * h))


def test_npo_at_reference_and_its_slope(rng):
    logits, _, labels = _batch(rng)
    beta = 0.1
    loss = npo_loss(logits, labels, logits.clone(), beta=beta)
    np.testing.assert_allclose(loss.numpy(), 2 / beta * math.log(2), rtol=1e-12)

    # dL/dz_t = 2 sigmoid(beta h) * (onehot(y_t) - softmax(z_t)) on answer positions.
    ref = logits + torch.tensor(rng.normal(size=logits.shape))
    free = logits.clone().requires_grad_(True)
    npo_loss(free, labels, ref, beta=beta).sum().backward()
    h = sequence_logps(logits, labels)[0] - sequence_logps(ref, labels)[0]
    one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), 7).double()
    dh = (one_hot - torch.softmax(logits, -1)) * (labels != -100).unsqueeze(-1)
    expected = (2 * torch.sigmoid(beta * h))[:, None, None] * dh
    torch.testing.assert_close(free.grad, expected)


@pytest.mark.parametrize("delta", [0.0, 0.3])
def test_simnpo_matches_loop(rng, delta):
    logits, _, labels = _batch(rng)
    beta = 4.5
    got = simnpo_loss(logits, labels, beta=beta, delta=delta)
    for b in range(3):
        total, count = _seq_logp(logits[b].numpy(), labels[b].numpy())
        expected = -(2 / beta) * _logsigmoid(-beta * total / count - beta * delta)
        assert got[b].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("beta", "lam", "k", "normalize"),
    [(0.1, 5.0, 1, False), (1.0, 2.0, 3, False), (0.5, 10.0, 2, True)],
)
def test_dipo_matches_definition(rng, beta, lam, k, normalize):
    logits, ref, labels = _batch(rng)
    got = dipo_loss(
        logits, labels, ref, beta=beta, lam=lam, k=k, length_normalize=normalize
    )
    expected = _dipo_reference(
        logits.numpy(), ref.numpy(), labels.numpy(), beta, lam, k, normalize
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_dipo_equals_kl_difference_form(rng):
    """Delta = sum_t KL(p-||pi) - KL(p+||pi) - [KL(p-||ref) - KL(p+||ref)]."""
    logits, ref, labels = _batch(rng, masked=False)
    beta, lam = 1.0, 3.0
    top = topk_mask(ref, 1)
    p_plus = torch.softmax(ref - lam * top, -1)
    p_minus = torch.softmax(ref + lam * top, -1)

    def kl(p, z):
        return (torch.xlogy(p, p) - p * torch.log_softmax(z, -1)).sum(-1)

    delta = (kl(p_minus, logits) - kl(p_plus, logits)) - (
        kl(p_minus, ref) - kl(p_plus, ref)
    )
    expected = -(2 / beta) * torch.nn.functional.logsigmoid(beta * delta.sum(-1))
    got = dipo_loss(logits, labels, ref, beta=beta, lam=lam)
    torch.testing.assert_close(got, expected)


def test_dipo_gradient_lowers_suppressed_high_confidence_logits(rng):
    """One SGD step on free logits lowers every top-k logit relative to the mean
    logit at every answer position, and leaves masked positions alone."""
    logits, ref, labels = _batch(rng, b=4, t=6, v=11)
    k = 2
    free = logits.clone().requires_grad_(True)
    dipo_loss(free, labels, ref, beta=0.1, lam=5.0, k=k).sum().backward()
    stepped = logits - 0.01 * free.grad

    top = topk_mask(ref, k).bool()
    mask = labels != -100
    centred_before = logits - logits.mean(-1, keepdim=True)
    centred_after = stepped - stepped.mean(-1, keepdim=True)
    moved = centred_after - centred_before
    assert bool((moved[top & mask.unsqueeze(-1)] < 0).all())
    assert bool((moved[~top & mask.unsqueeze(-1)] > 0).all())
    assert bool((free.grad[~mask] == 0).all())


def test_dipo_gradient_closed_form(rng):
    """d L / d z_t = -2 sigmoid(-beta Delta) (p+_t - p-_t) on answer positions."""
    logits, ref, labels = _batch(rng)
    beta, lam = 0.3, 4.0
    free = logits.clone().requires_grad_(True)
    loss = dipo_loss(free, labels, ref, beta=beta, lam=lam)
    loss.sum().backward()
    top = topk_mask(ref, 1)
    p_plus = torch.softmax(ref - lam * top, -1)
    p_minus = torch.softmax(ref + lam * top, -1)
    delta = torch.log(torch.expm1(loss * beta / 2)) / -beta  # invert the loss
    weight = -2 * torch.sigmoid(-beta * delta)
    expected = weight[:, None, None] * (p_plus - p_minus)
    expected = expected * (labels != -100).unsqueeze(-1)
    torch.testing.assert_close(free.grad, expected)


def test_dipo_vanishing_shift_gives_log2_and_no_gradient(rng):
    logits, ref, labels = _batch(rng)
    beta = 0.1
    free = logits.clone().requires_grad_(True)
    loss = dipo_loss(free, labels, ref, beta=beta, lam=1e-9)
    loss.sum().backward()
    np.testing.assert_allclose(loss.detach().numpy(), 2 / beta * math.log(2))
    assert free.grad.abs().max().item() < 1e-7


def test_dipo_gradcheck(rng):
    logits, ref, labels = _batch(rng, b=2, t=3, v=5)
    free = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: dipo_loss(z, labels, ref, beta=0.7, lam=2.0, k=2), (free,)
    )


def test_dipo_large_shift_is_finite(rng):
    logits, ref, labels = _batch(rng)
    loss = dipo_loss(logits.float(), labels, ref.float(), lam=1e4)
    assert bool(torch.isfinite(loss).all())


def test_losses_ignore_masked_label_values(rng):
    logits, ref, labels = _batch(rng)
    other = labels.clone()
    padded = torch.cat([logits, ref[:, :2]], dim=1)
    padded_ref = torch.cat([ref, logits[:, :2]], dim=1)
    padded_labels = torch.cat([other, torch.full((3, 2), -100)], dim=1)
    torch.testing.assert_close(
        dipo_loss(padded, padded_labels, padded_ref), dipo_loss(logits, labels, ref)
    )
    torch.testing.assert_close(
        npo_loss(padded, padded_labels, padded_ref), npo_loss(logits, labels, ref)
    )


def test_topk_ties_go_to_smaller_ids():
    z = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]])
    assert topk_mask(z, 1).tolist() == [[0, 1, 0, 0, 0]]
    assert topk_mask(z, 2).tolist() == [[0, 1, 1, 0, 0]]


def test_registry_holds_published_defaults():
    assert sorted(OBJECTIVES) == ["dipo", "ga", "graddiff", "npo", "simnpo"]
    assert dict(OBJECTIVES["npo"].defaults) == {"beta": 0.1}
    simnpo = OBJECTIVES["simnpo"]
    assert dict(simnpo.defaults) == {"beta": 4.5, "delta": 0.0}
    assert (simnpo.forget_weight, simnpo.retain_weight) == (0.125, 1.0)
    assert OBJECTIVES["ga"].retain_weight == 0.0
    assert get_objective("DiPO") is OBJECTIVES["dipo"]


def _bad(rng):
    logits, ref, labels = _batch(rng)
    return logits, ref, labels


BAD_INPUTS = [
    (dipo_loss, {"beta": 0.0}, ValueError, r"beta must be > 0 and finite; got 0\.0"),
    (dipo_loss, {"lam": -1.0}, ValueError, r"lam must be > 0 and finite; got -1\.0"),
    (dipo_loss, {"lam": "5"}, TypeError, r"lam must be a real number; got str"),
    (dipo_loss, {"k": 0}, ValueError, r"k must be >= 1 and < the vocabulary size 7"),
    (dipo_loss, {"k": 7}, ValueError, r"k must be >= 1 and < the vocabulary size 7"),
    (dipo_loss, {"k": 1.5}, TypeError, r"k must be an int; got float"),
    (npo_loss, {"beta": float("nan")}, ValueError, r"beta must be > 0"),
    (npo_loss, {"ref_logits": torch.zeros(3, 5, 6)}, ValueError, r"ref_logits must"),
    (npo_loss, {"labels": torch.zeros(3, 4, dtype=torch.long)}, ValueError, "labels"),
    (simnpo_loss, {"beta": -2.0}, ValueError, r"beta must be > 0"),
    (simnpo_loss, {"logits": torch.zeros(3, 5)}, ValueError, r"logits must have"),
    (gradient_ascent_loss, {"logits": np.zeros((3, 5, 7))}, TypeError, "torch"),
]


@pytest.mark.parametrize(("fn", "kwargs", "exc", "pattern"), BAD_INPUTS)
def test_bad_inputs(rng, fn, kwargs, exc, pattern):
    logits, ref, labels = _bad(rng)
    args = {"logits": logits, "labels": labels}
    if fn in (dipo_loss, npo_loss):
        args["ref_logits"] = ref
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        fn(**args)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(ValueError, match=r"one of \['dipo', 'ga', 'graddiff', 'npo'"):
        get_objective("kto")


# --- UnlearningTrainer ------------------------------------------------------------


def _tiny_setup():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lemmata.posttrain._models import tiny_causal_lm

    forget = [
        {"question": f"who is f{i} ?", "answer": f"f{i} is red ."} for i in range(4)
    ]
    retain = [
        {"question": f"who is r{i} ?", "answer": f"r{i} is blue ."} for i in range(4)
    ]
    words = {w for qa in forget + retain for text in qa.values() for w in text.split()}
    words |= {"Question:", "Answer:"}
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(sorted(words))})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    ids = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
    model = tiny_causal_lm(len(vocab), hidden_size=16, num_heads=2, special_tokens=ids)
    return model, tok, forget, retain


def _args(tmp_path, steps=2):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )


def _trainer_bad_inputs():
    return [
        ({"forget_dataset": []}, r"forget_dataset must not be empty; got 0"),
        ({"retain_dataset": "overlap"}, r"must not overlap; got 1 shared"),
        (
            {"processing_class": "nopad"},
            r"must have a pad token; got pad_token_id=None",
        ),
        ({"processing_class": None}, r"processing_class must be a tokenizer; got None"),
        ({"objective": "dpo"}, r"objective must be one of \['dipo', 'ga', 'graddiff'"),
        (
            {"retain_dataset": []},
            r"retain_dataset must not be empty when retain_weight",
        ),
        ({"retain_weight": -1.0}, r"retain_weight must be >= 0; got -1\.0"),
    ]


@pytest.mark.parametrize(("kwargs", "pattern"), _trainer_bad_inputs())
def test_trainer_bad_inputs(tmp_path, kwargs, pattern):
    import copy

    from lemmata.posttrain._unlearn_trainer import UnlearningTrainer

    model, tok, forget, retain = _tiny_setup()
    args = {
        "forget_dataset": forget,
        "retain_dataset": retain,
        "objective": "dipo",
        "processing_class": tok,
    }
    if kwargs.get("retain_dataset") == "overlap":
        kwargs = {"retain_dataset": [*retain, forget[2]]}
    if kwargs.get("processing_class") == "nopad":
        tok = copy.deepcopy(tok)
        tok.pad_token = None
        kwargs = {"processing_class": tok}
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        UnlearningTrainer(model, _args(tmp_path), **args)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_trainer_lowers_forget_probability(tmp_path, objective):
    from transformers import PrinterCallback

    from lemmata.posttrain._unlearn_trainer import UnlearningTrainer
    from lemmata.posttrain.tofu import answer_nll

    torch.manual_seed(0)
    model, tok, forget, retain = _tiny_setup()
    qs, ans = [x["question"] for x in forget], [x["answer"] for x in forget]
    before = answer_nll(model, tok, qs, ans).mean()
    trainer = UnlearningTrainer(
        model,
        _args(tmp_path, steps=3),
        forget_dataset=forget,
        retain_dataset=retain,
        objective=objective,
        processing_class=tok,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    after = answer_nll(trainer.model, tok, qs, ans).mean()
    assert after > before
    if OBJECTIVES[objective].needs_reference:
        ref_nll = answer_nll(trainer.ref_model, tok, qs, ans).mean()
        assert ref_nll == pytest.approx(before)


def test_trainer_with_lora_uses_the_disabled_adapter_as_reference(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback

    from lemmata.posttrain._unlearn_trainer import UnlearningTrainer
    from lemmata.posttrain.tofu import answer_nll

    torch.manual_seed(0)
    base, tok, forget, retain = _tiny_setup()
    qs, ans = [x["question"] for x in forget], [x["answer"] for x in forget]
    before = answer_nll(base, tok, qs, ans)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    trainer = UnlearningTrainer(
        model,
        _args(tmp_path, steps=3),
        forget_dataset=forget,
        retain_dataset=retain,
        objective="dipo",
        # The retain NLL shares the tokens "is" and "." with the forget answers;
        # without it the forget NLL measures the forget objective alone.
        retain_weight=0.0,
        processing_class=tok,
    )
    trainer.remove_callback(PrinterCallback)
    forget_terms = []
    compute_loss = trainer.compute_loss

    def spy(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        forget_terms.append(trainer._terms["loss/forget"][-1])
        return loss

    trainer.compute_loss = spy
    trainer.train()
    # DiPO pushes down the reference's top-k tokens, which in an untrained model
    # need not be the answer tokens: the forget objective itself must fall.
    assert len(forget_terms) == 3
    assert forget_terms[-1] < forget_terms[0]
    assert not np.allclose(answer_nll(model, tok, qs, ans), before)
    with model.disable_adapter():
        np.testing.assert_allclose(answer_nll(model, tok, qs, ans), before, rtol=1e-5)
