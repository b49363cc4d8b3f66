"""TOFU metrics against closed forms and hand values, the model-scoring helpers
against the model's own loss, and the generated benchmark's structure."""

import math

import numpy as np
import pytest
import scipy.stats

from lemmata.posttrain._fictitious import make_fictitious_benchmark
from lemmata.posttrain.tofu import (
    answer_nll,
    answer_probability,
    encode_qa,
    evaluate_tofu,
    forget_quality,
    greedy_answers,
    model_utility,
    normalized_probability,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_score,
)


def test_answer_probability_is_exp_of_minus_mean_nll():
    np.testing.assert_allclose(answer_probability([0.0, math.log(2)]), [1.0, 0.5])


def test_truth_ratio_hand_values():
    # P(para) = 1/2; perturbed mean-NLLs log 4 and log 16 average to log 8, so the
    # perturbed side is 1/8 and R = (1/8) / (1/2 + 1e-10).
    para = [math.log(2), 0.0]
    pert = [[math.log(4), math.log(16)], [0.0, 0.0]]
    expected = [0.125 / (0.5 + 1e-10), 1.0 / (1.0 + 1e-10)]
    np.testing.assert_allclose(truth_ratio(para, pert), expected, rtol=1e-14)


def test_truth_ratio_score_clips_at_zero():
    assert truth_ratio_score([0.25, 1.0, 3.0]) == pytest.approx(0.75 / 3)


def test_normalized_probability_hand_values():
    # P = 1/2 for the right answer, 1/4 and 1/4 for the wrong ones -> 1/2.
    got = normalized_probability([math.log(2)], [[math.log(4), math.log(4)]])
    np.testing.assert_allclose(got, [0.5])
    # Very unlikely answers everywhere do not underflow to 0/0.
    got = normalized_probability([900.0], [[900.0 + math.log(3)]])
    np.testing.assert_allclose(got, [0.75])


def test_forget_quality_identical_samples_is_one(rng):
    sample = rng.random(16)
    assert forget_quality(sample, sample) == 1.0


def test_forget_quality_separated_samples_exact_pvalue():
    # Two samples of 10 with no overlap: D = 1, and the exact two-sided p-value is
    # 2 / C(20, 10) (only the two fully separated orderings reach D = 1).
    low, high = np.arange(10) / 10, 5 + np.arange(10) / 10
    assert forget_quality(low, high) == pytest.approx(2 / math.comb(20, 10), rel=1e-9)


def test_forget_quality_matches_scipy(rng):
    a, b = rng.random(30), rng.random(25) + 0.2
    assert forget_quality(a, b) == scipy.stats.ks_2samp(a, b).pvalue


def test_model_utility_is_harmonic_mean(rng):
    values = rng.uniform(0.1, 1.0, size=9)
    assert model_utility(values) == pytest.approx(scipy.stats.hmean(values))
    named = {f"set{i}/metric": v for i, v in enumerate(values)}
    assert model_utility(named) == pytest.approx(scipy.stats.hmean(values))
    assert model_utility([0.5, 0.0, 1.0]) == 0.0


def test_rouge_l_recall_hand_values():
    # LCS("a b c d", "a c d e") = "a c d": recall 3/4; case and punctuation ignored.
    got = rouge_l_recall(["a c d e", "The Cat."], ["a b c d", "the cat sat"])
    np.testing.assert_allclose(got, [0.75, 2 / 3])


BAD_METRIC_INPUTS = [
    (truth_ratio, ([0.1], [0.1]), ValueError, r"perturbed_nll must be 2-dimensional"),
    (truth_ratio, ([0.1, 0.2], [[0.1]]), ValueError, r"must have 2 rows to match"),
    (truth_ratio, ([], np.zeros((0, 2))), ValueError, r"must not be empty"),
    (truth_ratio, ([np.nan], [[0.1]]), ValueError, r"paraphrased_nll must be finite"),
    (truth_ratio_score, ([-0.1],), ValueError, r"ratios must be >= 0"),
    (forget_quality, (np.ones(12), None), ValueError, r"retain model's truth ratios"),
    (forget_quality, (np.ones(9), np.ones(12)), ValueError, r"at least 10 .* got 9"),
    (model_utility, ([],), ValueError, r"values must not be empty"),
    (model_utility, ([0.5, -0.1],), ValueError, r"values must be finite and >= 0"),
    (rouge_l_recall, (["a"], ["a", "b"]), ValueError, r"must have 2 entries"),
    (rouge_l_recall, ("a", "a"), TypeError, r"sequences of str; got str"),
    (normalized_probability, ([0.1], [[0.1], [0.2]]), ValueError, r"1 rows"),
]


@pytest.mark.parametrize(("fn", "args", "exc", "pattern"), BAD_METRIC_INPUTS)
def test_bad_metric_inputs(fn, args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn(*args)


# --- scoring a model ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lemmata.posttrain._models import tiny_causal_lm

    bench = make_fictitious_benchmark(
        np.random.default_rng(0),
        n_authors=4,
        n_attributes=6,
        n_real_authors=2,
        n_world_facts=3,
    )
    texts = ["Question: \nAnswer:"]
    for q in bench.author_qa + bench.real_authors + bench.world_facts:
        texts += [q.question, q.answer, q.paraphrased_answer, *q.perturbed_answers]
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    words = sorted({w for t in texts for w in t.split()})
    vocab.update({w: i + 3 for i, w in enumerate(words)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    ids = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
    torch.manual_seed(0)
    model = tiny_causal_lm(len(vocab), hidden_size=16, num_heads=2, special_tokens=ids)
    return model, tok, bench


def test_encode_qa_masks_the_prompt(tiny):
    _, tok, bench = tiny
    qa = bench.author_qa[0]
    enc = encode_qa(tok, qa.question, qa.answer)
    n_prompt = len(tok("Question: " + qa.question + "\nAnswer:")["input_ids"])
    assert enc["labels"][:n_prompt] == [-100] * n_prompt
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert enc["input_ids"][-1] == tok.eos_token_id


def test_answer_nll_matches_model_loss(tiny):
    import torch

    model, tok, bench = tiny
    items = bench.author_qa[:5]
    got = answer_nll(
        model, tok, [q.question for q in items], [q.answer for q in items], batch_size=2
    )
    for qa, value in zip(items, got, strict=True):
        enc = encode_qa(tok, qa.question, qa.answer)
        with torch.no_grad():
            loss = model(
                input_ids=torch.tensor([enc["input_ids"]]),
                labels=torch.tensor([enc["labels"]]),
            ).loss
        assert value == pytest.approx(loss.item(), rel=1e-5)


def test_greedy_answers_ignore_left_padding(tiny):
    model, tok, bench = tiny
    short = bench.world_facts[0].question
    long = bench.author_qa[10].question
    alone = greedy_answers(model, tok, [short], max_new_tokens=5)
    together = greedy_answers(model, tok, [short, long], max_new_tokens=5)
    assert together[0] == alone[0]
    assert all(isinstance(t, str) for t in together)


def test_evaluate_tofu_report(tiny):
    model, tok, bench = tiny
    forget, retain = bench.split(50)
    report = evaluate_tofu(
        model,
        tok,
        forget=forget,
        retain=retain[:4],
        real_authors=bench.real_authors,
        world_facts=bench.world_facts,
        retain_truth_ratios=None,
        max_new_tokens=4,
    )
    assert report.forget_quality is None
    assert len(report.utility) == 9
    assert report.model_utility == pytest.approx(
        scipy.stats.hmean(list(report.utility.values()))
    )
    assert report.forget_truth_ratios.shape == (len(forget),)
    again = evaluate_tofu(
        model,
        tok,
        forget=forget,
        retain=retain[:4],
        real_authors=bench.real_authors,
        world_facts=bench.world_facts,
        retain_truth_ratios=report.forget_truth_ratios,
        max_new_tokens=4,
    )
    assert again.forget_quality == 1.0


def test_evaluate_tofu_bad_inputs(tiny):
    import copy

    model, tok, bench = tiny
    sets = {
        "forget": bench.author_qa[:12],
        "retain": bench.author_qa[12:14],
        "real_authors": bench.real_authors,
        "world_facts": bench.world_facts,
    }
    with pytest.raises(ValueError, match=r"retain must not be empty; got 0 items"):
        evaluate_tofu(model, tok, **{**sets, "retain": []})
    nopad = copy.deepcopy(tok)
    nopad.pad_token = None
    with pytest.raises(ValueError, match=r"tokenizer must have a pad token"):
        evaluate_tofu(model, nopad, **sets)
    odd = [
        {
            "question": "q",
            "answer": "a",
            "paraphrased_answer": "a",
            "perturbed_answers": [],
        }
    ]
    with pytest.raises(ValueError, match=r"perturbed_answers must be non-empty"):
        evaluate_tofu(model, tok, **{**sets, "world_facts": odd})


# --- the generated benchmark ----------------------------------------------------


def test_benchmark_splits_are_nested_and_disjoint():
    bench = make_fictitious_benchmark(np.random.default_rng(1))
    assert len(bench.authors) == 40 and len(set(bench.authors)) == 40
    assert len(bench.author_qa) == 40 * 16
    sizes = [bench.n_forget_authors(p) for p in (2.5, 5, 10)]
    assert sizes == [1, 2, 4]
    previous: set = set()
    for pct in (2.5, 5, 10):
        forget, retain = bench.split(pct)
        ids_f, ids_r = {q.id for q in forget}, {q.id for q in retain}
        assert not ids_f & ids_r
        assert len(ids_f) + len(ids_r) == len(bench.author_qa)
        assert previous <= ids_f
        previous = ids_f
    train = bench.training_set(bench.authors[:4])
    assert not {q.subject for q in train} & set(bench.authors[:4])
    assert len(train) == 36 * 16 + len(bench.real_authors) + len(bench.world_facts)


def test_benchmark_answers():
    bench = make_fictitious_benchmark(np.random.default_rng(2))
    for qa in bench.author_qa:
        assert qa.paraphrased_answer != qa.answer
        assert len(set(qa.perturbed_answers)) == 3
        assert qa.paraphrased_answer not in qa.perturbed_answers
        # A perturbation differs from the paraphrase in its value only.
        assert len(qa.perturbed_answers[0].split()) >= 3
    for qa in bench.world_facts + bench.real_authors:
        assert qa.paraphrased_answer == qa.answer
        assert qa.answer not in qa.perturbed_answers
    # 20 real-author entities, two questions each.
    assert len(bench.world_facts) == 30 and len(bench.real_authors) == 40
    again = make_fictitious_benchmark(np.random.default_rng(2))
    assert again == bench


BAD_BENCHMARK = [
    ({"n_authors": 0}, ValueError, r"n_authors must be in \[1, "),
    ({"n_attributes": 9}, ValueError, r"n_attributes must be in \[1, 8\]; got 9"),
    ({"n_perturbed": 2.0}, TypeError, r"n_perturbed must be an int; got float"),
    ({"rng": 0}, TypeError, r"rng must be a numpy Generator; got int"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_BENCHMARK)
def test_benchmark_bad_inputs(kwargs, exc, pattern):
    args = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(exc, match=pattern):
        make_fictitious_benchmark(**args)


def test_split_bad_percent():
    bench = make_fictitious_benchmark(np.random.default_rng(0), n_authors=4)
    with pytest.raises(ValueError, match=r"percent must be in \(0, 100\); got 100"):
        bench.split(100)
    with pytest.raises(ValueError, match=r"unknown \['Nobody'\]"):
        bench.by_authors(["Nobody"])
