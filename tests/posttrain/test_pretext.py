"""Pretext-GRPO / ViSS-R1: transformations, prompts, parsing and TRL rewards.

Every transformation is checked against a reference written here with plain numpy
(``np.rot90``, slicing, explicit index lists); the rewards against tables written
from the docstrings.
"""

import itertools
import re

import numpy as np
import pytest
import torch

from lemmata.posttrain._pretext import (
    IMAGE_TRANSFORMS,
    OPTION_LETTERS,
    VIDEO_TRANSFORMS,
    answer_accuracy_reward,
    apply_transform,
    format_reward,
    joint_format_reward,
    parse_completion,
    pretext_accuracy_reward,
    pretext_prompt,
    sample_transform,
    transform_options,
    transform_reward,
    viss_prompt,
    viss_reward,
)

TABLES = {"image": IMAGE_TRANSFORMS, "video": VIDEO_TRANSFORMS}
ALL = [(kind, name) for kind, table in TABLES.items() for name in table]


def _image(h=4, w=6, c=3):
    # Non-square, with channels and distinct entries, so a wrong axis shows.
    return np.arange(h * w * c).reshape(h, w, c)


def _video(t=8, h=4, w=6, c=2):
    return np.arange(t * h * w * c).reshape(t, h, w, c)


def _frozen(x):
    x = x.copy()
    x.flags.writeable = False
    return x


# --- independent references -------------------------------------------------


def _ref_quadrants(x, i, j):
    """Swap quadrants i, j (TL, TR, BL, BR) by explicit slice assignment."""
    h2, w2 = x.shape[0] // 2, x.shape[1] // 2
    box = [
        (slice(0, h2), slice(0, w2)),
        (slice(0, h2), slice(w2, None)),
        (slice(h2, None), slice(0, w2)),
        (slice(h2, None), slice(w2, None)),
    ]
    out = x.copy()
    out[box[i]] = x[box[j]]
    out[box[j]] = x[box[i]]
    return out


def _ref_group_swap(v, i, j, groups=4):
    """Frame index list with groups i and j (time order) exchanged."""
    g = v.shape[0] // groups
    blocks = [list(range(b * g, (b + 1) * g)) for b in range(groups)]
    blocks[i], blocks[j] = blocks[j], blocks[i]
    return v[[f for block in blocks for f in block]]


def _reference(kind, description, x):
    """The array an option's *description* (as the prompt lists it) denotes."""
    rot = re.fullmatch(r"rotated (\d+) degrees", description)
    if description in ("not rotated", "not flipped", "played forward"):
        return x
    if rot:
        k = int(rot.group(1)) // 90
        if kind == "image":
            return np.rot90(x, k)
        return np.stack([np.rot90(frame, k) for frame in x])  # per frame, CCW
    if description == "flipped horizontally":
        return x[:, ::-1]  # left-right mirror
    if description == "flipped vertically":
        return x[::-1]
    if description == "played in reverse":
        return x[np.arange(x.shape[0])[::-1]]
    swap = re.fullmatch(r"parts (\d) and (\d) swapped", description)
    assert swap, description
    i, j = int(swap.group(1)) - 1, int(swap.group(2)) - 1
    return _ref_quadrants(x, i, j) if kind == "image" else _ref_group_swap(x, i, j)


# --- transformations ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_every_option_matches_the_reference_of_its_description(kind, name):
    x = _frozen(_image() if kind == "image" else _video())
    before = x.copy()
    options = transform_options(name, kind)
    assert options == TABLES[kind][name]
    assert 2 <= len(options) <= len(OPTION_LETTERS)
    outs = []
    for k, description in enumerate(options):
        expected = _reference(kind, description, before)
        for label in (OPTION_LETTERS[k], OPTION_LETTERS[k].lower(), k, np.int64(k)):
            out = apply_transform(x, name, label, kind=kind)
            np.testing.assert_array_equal(out, expected)
            assert out.dtype == x.dtype
            assert not np.shares_memory(out, x)
        outs.append(out)
    np.testing.assert_array_equal(x, before)  # read-only input, unchanged
    # The options are distinct transformations of a generic input.
    for a, b in itertools.combinations(range(len(outs)), 2):
        assert outs[a].shape != outs[b].shape or not np.array_equal(outs[a], outs[b])


def test_identity_options_return_an_equal_copy():
    img, vid = _image(), _video()
    for kind, name, x in [
        ("image", "rotate", img),
        ("image", "flip", img),
        ("video", "rotate", vid),
        ("video", "reverse", vid),
    ]:
        out = apply_transform(x, name, "A", kind=kind)
        np.testing.assert_array_equal(out, x)
        assert out is not x and not np.shares_memory(out, x)
        out[...] = -1  # writing the result leaves the input alone
        assert x.min() >= 0


def test_spot_values_pin_the_conventions():
    img = np.array([[1, 2], [3, 4]])
    # np.rot90 is counter-clockwise: the top-right element goes to the top-left.
    np.testing.assert_array_equal(
        apply_transform(img, "rotate", "B", kind="image"), [[2, 4], [1, 3]]
    )
    np.testing.assert_array_equal(
        apply_transform(img, "flip", "B", kind="image"), [[2, 1], [4, 3]]
    )
    np.testing.assert_array_equal(
        apply_transform(img, "flip", "C", kind="image"), [[3, 4], [1, 2]]
    )
    # Puzzle option A swaps top-left and top-right; F bottom-left and bottom-right.
    np.testing.assert_array_equal(
        apply_transform(img, "puzzle", "A", kind="image"), [[2, 1], [3, 4]]
    )
    np.testing.assert_array_equal(
        apply_transform(img, "puzzle", "F", kind="image"), [[1, 2], [4, 3]]
    )
    vid = np.arange(8).reshape(8, 1, 1)
    got = {
        letter: apply_transform(vid, "shuffle", letter).ravel().tolist()
        for letter in OPTION_LETTERS
    }
    assert got == {
        "A": [2, 3, 0, 1, 4, 5, 6, 7],
        "B": [4, 5, 2, 3, 0, 1, 6, 7],
        "C": [6, 7, 2, 3, 4, 5, 0, 1],
        "D": [0, 1, 4, 5, 2, 3, 6, 7],
        "E": [0, 1, 6, 7, 4, 5, 2, 3],
        "F": [0, 1, 2, 3, 6, 7, 4, 5],
    }
    np.testing.assert_array_equal(
        apply_transform(vid, "reverse", "B").ravel(), [7, 6, 5, 4, 3, 2, 1, 0]
    )


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_orders_and_inverses(kind, name):
    x = _image(4, 4) if kind == "image" else _video(8, 4, 4)
    n = len(transform_options(name, kind))
    for k in range(n):
        once = apply_transform(x, name, k, kind=kind)
        if name == "rotate":
            # Rotation by k*90 has order 4/gcd(k, 4); k then (4 - k) is identity.
            y = x
            for _ in range(4):
                y = apply_transform(y, name, k, kind=kind)
            np.testing.assert_array_equal(y, x)
            back = apply_transform(once, name, (4 - k) % 4, kind=kind)
            np.testing.assert_array_equal(back, x)
            if k == 2:
                np.testing.assert_array_equal(
                    apply_transform(once, name, k, kind=kind), x
                )
        else:
            # Flips, time reversal and pair swaps are involutions.
            twice = apply_transform(once, name, k, kind=kind)
            np.testing.assert_array_equal(twice, x)


def test_shapes_of_rotations_on_non_square_inputs():
    img, vid = _image(4, 6, 3), _video(8, 4, 6, 2)
    assert apply_transform(img, "rotate", "B", kind="image").shape == (6, 4, 3)
    assert apply_transform(img, "rotate", "C", kind="image").shape == (4, 6, 3)
    assert apply_transform(vid, "rotate", "D").shape == (8, 6, 4, 2)
    # Lists are accepted as array-likes.
    out = apply_transform([[1, 2], [3, 4]], "flip", "B", kind="image")
    np.testing.assert_array_equal(out, [[2, 1], [4, 3]])


@pytest.mark.parametrize("t", [4, 8, 12])
def test_shuffle_with_other_frame_counts(t):
    vid = _video(t, 2, 2, 1)
    for k, (i, j) in enumerate(itertools.combinations(range(4), 2)):
        np.testing.assert_array_equal(
            apply_transform(vid, "shuffle", k), _ref_group_swap(vid, i, j)
        )


# --- sampling -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_sample_transform_is_reproducible_consistent_and_covers(kind, name):
    x = _image(4, 4, 1) if kind == "image" else _video(4, 2, 2, 1)
    n = len(transform_options(name, kind))

    def draws(seed, count=200):
        rng = np.random.default_rng(seed)
        return [sample_transform(x, name, rng, kind=kind) for _ in range(count)]

    first, again = draws(3), draws(3)
    assert [lab for _, lab in first] == [lab for _, lab in again]
    for (a, la), (b, lb) in zip(first, again, strict=True):
        assert la == lb
        np.testing.assert_array_equal(a, b)
    # The returned letter is the option that was applied.
    for out, label in first:
        assert isinstance(label, str)
        np.testing.assert_array_equal(out, apply_transform(x, name, label, kind=kind))
    assert {lab for _, lab in first} == set(OPTION_LETTERS[:n])
    assert [lab for _, lab in draws(4)] != [lab for _, lab in first]


def test_sample_reverse_probability():
    vid = _video(2, 1, 1, 1)
    rng = np.random.default_rng(0)
    labels = [sample_transform(vid, "reverse", rng)[1] for _ in range(4000)]
    assert set(labels) == {"A", "B"}
    # Default 0.55; binomial sd = 0.008, so 0.03 is more than 3.5 sd.
    assert abs(labels.count("B") / 4000 - 0.55) < 0.03
    for p, only in [(0.0, "A"), (1.0, "B")]:
        rng = np.random.default_rng(1)
        got = {
            sample_transform(vid, "reverse", rng, reverse_prob=p)[1] for _ in range(50)
        }
        assert got == {only}


def test_sample_uniform_options():
    img = _image(2, 2, 1)
    rng = np.random.default_rng(0)
    labels = [
        sample_transform(img, "puzzle", rng, kind="image")[1] for _ in range(3000)
    ]
    for letter in OPTION_LETTERS:
        assert abs(labels.count(letter) / 3000 - 1 / 6) < 0.03


# --- prompts and letters ------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_prompts_list_each_option_under_the_letter_the_reward_expects(kind, name):
    x = _image(4, 4) if kind == "image" else _video(8, 4, 4)
    options = transform_options(name, kind)
    p = pretext_prompt(name, kind)
    v = viss_prompt("  Which way does the sprite move? A. up B. down  ", name, kind)
    assert "<answer>" in p and "</answer>" in p and f"This {kind}" in p
    assert "<transform>" in v and "<answer>" in v
    assert v.endswith("Question: Which way does the sprite move? A. up B. down")
    for prompt in (p, v):
        listed = re.findall(r"([A-F])\. ([a-z0-9 ]+)\.", prompt.split("Question:")[0])
        assert listed == list(zip(OPTION_LETTERS[: len(options)], options, strict=True))
    for k, description in enumerate(options):
        letter = OPTION_LETTERS[k]
        np.testing.assert_array_equal(
            apply_transform(x, name, letter, kind=kind),
            _reference(kind, description, x),
        )
        good = f"<transform>{letter}</transform><answer>{letter}</answer>"
        assert pretext_accuracy_reward(
            completions=[good], transform_label=[letter]
        ) == [1.0]
        assert transform_reward(completions=[good], transform_label=[letter]) == [0.5]


def test_pretext_prompt_names_no_label():
    # The prompt depends only on the transformation, never on the drawn option.
    assert pretext_prompt("rotate") == pretext_prompt("rotate", "video")
    assert pretext_prompt("rotate", "image") != pretext_prompt("rotate", "video")


# --- parsing and format rewards -----------------------------------------------

PARSE = [
    # (completion, joint, expected)
    ("<answer>A</answer>", False, {"answer": "A"}),
    ("<think>x</think><answer>A</answer>", False, {"answer": "A"}),
    (
        "  <think>\nline 1\nline 2\n</think>\n\n<answer>  B \n</answer>\n",
        False,
        {"answer": "B"},
    ),
    ("<answer>two words</answer>", False, {"answer": "two words"}),
    ("<answer>A", False, None),
    ("A", False, None),
    ("", False, None),
    ("<think>only thinking</think>", False, None),
    ("<answer></answer>", False, None),
    ("so: <answer>A</answer>", False, None),
    ("<answer>A</answer> trailing", False, None),
    ("<answer>A</answer><think>late</think>", False, None),
    ("<transform>A</transform><answer>B</answer>", False, None),
    (
        "<transform>A</transform><answer>B</answer>",
        True,
        {"transform": "A", "answer": "B"},
    ),
    (
        "<think>t</think>\n<transform> C </transform>\n<answer> 42 </answer>",
        True,
        {"transform": "C", "answer": "42"},
    ),
    ("<answer>B</answer><transform>A</transform>", True, None),
    ("<answer>B</answer>", True, None),
    ("<transform>A</transform>", True, None),
    ("<transform></transform><answer>B</answer>", True, None),
    ("<transform>A</transform> x <answer>B</answer>", True, None),
    ("<think>t</think><transform>A</transform><answer>B", True, None),
]


@pytest.mark.parametrize(("completion", "joint", "expected"), PARSE)
def test_parse_completion(completion, joint, expected):
    assert parse_completion(completion, joint=joint) == expected
    conversational = [{"role": "assistant", "content": completion}]
    assert parse_completion(conversational, joint=joint) == expected


def test_format_rewards_on_a_table_strings_and_conversational():
    strings = [c for c, _, _ in PARSE]
    want_plain = [float(parse_completion(c, joint=False) is not None) for c in strings]
    want_joint = [float(parse_completion(c, joint=True) is not None) for c in strings]
    # Written out for the table above: which completions are well-formed.
    assert want_plain == [1.0] * 4 + [0.0] * 12 + [1.0] + [0.0] * 4
    assert want_joint == [0.0] * 12 + [1.0] * 3 + [0.0] * 6
    chats = [[{"role": "assistant", "content": c}] for c in strings]
    for completions in (strings, chats):
        assert format_reward(prompts=None, completions=completions) == want_plain
        assert joint_format_reward(prompts=None, completions=completions) == want_joint
    assert format_reward(completions=[]) == []
    assert joint_format_reward(completions=[]) == []


def test_conversational_reads_the_last_message():
    chat = [
        {"role": "assistant", "content": "<answer>A</answer>"},
        {"role": "tool", "content": "result"},
        {"role": "assistant", "content": "<answer>B</answer>"},
    ]
    assert parse_completion(chat, joint=False) == {"answer": "B"}
    assert pretext_accuracy_reward(completions=[chat], transform_label=["B"]) == [1.0]
    assert format_reward(completions=[[], [{"role": "assistant"}]]) == [0.0, 0.0]


# --- accuracy rewards ---------------------------------------------------------

PRETEXT_ACC = [
    ("<answer>B</answer>", "B", 1.0),
    ("<think>maybe A</think><answer>B</answer>", "B", 1.0),
    ("<answer> b </answer>", "B", 1.0),
    ("<answer>B</answer>", "b", 1.0),
    ("<answer>B.</answer>", "B", 1.0),
    ("<answer>C</answer>", "B", 0.0),
    ("<answer>rotated 90 degrees</answer>", "B", 0.0),
    ("B", "B", 0.0),
    ("<answer>B", "B", 0.0),
    ("<transform>B</transform>", "B", 0.0),
    ("<answer></answer>", "B", 0.0),
]


def test_pretext_accuracy_reward_table():
    completions = [c for c, _, _ in PRETEXT_ACC]
    labels = [y for _, y, _ in PRETEXT_ACC]
    want = [r for _, _, r in PRETEXT_ACC]
    assert (
        pretext_accuracy_reward(completions=completions, transform_label=labels) == want
    )
    chats = [[{"role": "assistant", "content": c}] for c in completions]
    assert pretext_accuracy_reward(completions=chats, transform_label=labels) == want


ANSWER_ACC = [
    ("<answer>3</answer>", "3.0", 1.0),
    ("<answer>3.50</answer>", "3.5", 1.0),
    ("<answer>1e3</answer>", "1000", 1.0),
    ("<answer>2</answer>", 2, 1.0),
    ("<answer>-0.5</answer>", -0.5, 1.0),
    ("<answer>2.1</answer>", "2", 0.0),
    ("<answer>a</answer>", "A", 1.0),
    ("<answer>B</answer>", "A", 0.0),
    ("<transform>B</transform><answer>A</answer>", "A", 1.0),
    ("<transform>A</transform><answer>B</answer>", "A", 0.0),
    ("", "A", 0.0),
    ("A", "A", 0.0),
]


def test_answer_accuracy_reward_table():
    completions = [c for c, _, _ in ANSWER_ACC]
    solutions = [y for _, y, _ in ANSWER_ACC]
    want = [r for _, _, r in ANSWER_ACC]
    assert answer_accuracy_reward(completions=completions, solution=solutions) == want


def test_transform_reward_table_and_weight():
    completions = [
        "<transform>B</transform><answer>A</answer>",
        "<transform> b </transform><answer>C</answer>",
        "<transform>A</transform><answer>B</answer>",
        "<answer>B</answer>",
        "B",
    ]
    labels = ["B"] * 5
    assert transform_reward(completions=completions, transform_label=labels) == [
        0.5,
        0.5,
        0.0,
        0.0,
        0.0,
    ]
    assert transform_reward(
        completions=completions, transform_label=labels, weight=2.0
    ) == [2.0, 2.0, 0.0, 0.0, 0.0]


VISS = [
    # (completion, transform_label, solution, reward = 1[fmt](1 + .5[tau] + [y]))
    ("<think>t</think><transform>B</transform><answer>C</answer>", "B", "C", 2.5),
    ("<transform>B</transform><answer>C</answer>", "A", "C", 2.0),
    ("<transform>B</transform><answer>C</answer>", "B", "D", 1.5),
    ("<transform>B</transform><answer>C</answer>", "A", "D", 1.0),
    ("<transform>a</transform><answer>4</answer>", "A", "4.0", 2.5),
    ("<answer>C</answer><transform>B</transform>", "B", "C", 0.0),
    ("<transform>B</transform> C", "B", "C", 0.0),
    ("<answer>C</answer>", "B", "C", 0.0),
    ("", "B", "C", 0.0),
]


def test_viss_reward_table():
    completions = [c for c, *_ in VISS]
    taus = [t for _, t, _, _ in VISS]
    ys = [y for _, _, y, _ in VISS]
    want = [r for *_, r in VISS]
    for comps in (
        completions,
        [[{"role": "assistant", "content": c}] for c in completions],
    ):
        assert viss_reward(completions=comps, transform_label=taus, solution=ys) == want
    # Well-formed: equal to the released sum of the three separate rewards;
    # malformed: 0 (the released sum could still pay the transform/answer terms).
    fmt = joint_format_reward(completions=completions)
    summed = [
        f + t + a
        for f, t, a in zip(
            fmt,
            transform_reward(completions=completions, transform_label=taus),
            answer_accuracy_reward(completions=completions, solution=ys),
            strict=True,
        )
    ]
    for f, s, r in zip(fmt, summed, want, strict=True):
        assert r == (s if f else 0.0)


def test_duplicated_or_nested_tags_cannot_earn_two_answers():
    hedges = [
        "<answer>A</answer><answer>B</answer>",
        "<answer><answer>A</answer>B</answer>",
        "<transform>A</transform><answer>A</answer><answer>B</answer>",
    ]
    for c in hedges:
        paid = [answer_accuracy_reward(completions=[c], solution=[y])[0] for y in "AB"]
        assert sum(paid) <= 1.0
        paid = [
            viss_reward(completions=[c], transform_label=["A"], solution=[y])[0]
            for y in "AB"
        ]
        # At most format + transform for each solution, plus one answer credit.
        assert sum(paid) <= 2 * 1.5 + 1.0
        pretext = [
            pretext_accuracy_reward(completions=[c], transform_label=[y])[0]
            for y in "AB"
        ]
        assert sum(pretext) <= 1.0


# --- TRL call convention --------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        format_reward,
        joint_format_reward,
        pretext_accuracy_reward,
        transform_reward,
        answer_accuracy_reward,
        viss_reward,
    ],
)
@pytest.mark.parametrize("conversational", [False, True])
def test_called_the_way_trl_grpo_trainer_calls(fn, conversational):
    texts = [
        "<think>t</think><transform>B</transform><answer>C</answer>",
        "<transform>A</transform><answer>C</answer>",
        "garbage",
    ]
    if conversational:
        prompts = [[{"role": "user", "content": viss_prompt("q?", "rotate")}]] * 3
        completions = [[{"role": "assistant", "content": t}] for t in texts]
    else:
        prompts = [viss_prompt("q?", "rotate")] * 3
        completions = texts
    out = fn(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2, 3], [4, 5], [6]],
        transform_label=["B", "B", "B"],
        solution=["C", "C", "C"],
        question=["q?"] * 3,  # any other dataset column
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(r, float) for r in out)
    assert torch.tensor(out, dtype=torch.float32).shape == (3,)  # as TRL converts
    assert out[2] == 0.0
    assert fn.__name__  # TRL names the reward column after it


# --- bad inputs ---------------------------------------------------------------

_VID, _IMG = _video(8, 2, 2, 1), _image(4, 4, 1)

BAD_TRANSFORMS = [
    (
        (_VID, "zoom", "A"),
        {},
        r"^unknown video transformation 'zoom'; valid names: reverse, rotate, "
        r"shuffle$",
    ),
    (
        (_VID, "flip", "A"),
        {},
        r"^unknown video transformation 'flip'; valid names: reverse, rotate, "
        r"shuffle$",
    ),
    (
        (_IMG, "reverse", "A"),
        {"kind": "image"},
        r"^unknown image transformation 'reverse'; valid names: flip, puzzle, rotate$",
    ),
    (
        (_IMG, "rotate", "A"),
        {"kind": "audio"},
        r"^kind must be 'image' or 'video'; got 'audio'$",
    ),
    (
        (_VID, "rotate", "E"),
        {},
        r"^label of video transformation 'rotate' must be one of \['A', 'B', 'C', "
        r"'D'\] or an index in \[0, 4\); got 'E'$",
    ),
    (
        (_VID, "reverse", 2),
        {},
        r"must be one of \['A', 'B'\] or an index in \[0, 2\); got 2$",
    ),
    ((_VID, "rotate", -1), {}, r"or an index in \[0, 4\); got -1$"),
    ((_VID, "rotate", True), {}, r"or an index in \[0, 4\); got True$"),
    ((_VID, "rotate", 1.0), {}, r"or an index in \[0, 4\); got 1\.0$"),
    ((_VID, "rotate", "AB"), {}, r"or an index in \[0, 4\); got 'AB'$"),
    ((_VID, "rotate", None), {}, r"or an index in \[0, 4\); got None$"),
    (
        (_IMG, "flip", "D"),
        {"kind": "image"},
        r"^label of image transformation 'flip' must be one of \['A', 'B', 'C'\]",
    ),
    (
        (np.zeros(4), "rotate", "A"),
        {"kind": "image"},
        r"^image must have at least 2 dimensions; got shape \(4,\)$",
    ),
    (
        (np.zeros((4, 6)), "rotate", "A"),
        {},
        r"^video must have at least 3 dimensions; got shape \(4, 6\)$",
    ),
    (
        (np.zeros((1, 2, 2)), "reverse", "B"),
        {},
        r"^video must have >= 2 frames to reverse; got 1$",
    ),
    (
        (np.zeros((6, 2, 2)), "shuffle", "A"),
        {},
        r"^video must have a multiple of 4 frames \(>= 4\) to swap frame "
        r"groups; got 6$",
    ),
    (
        (np.zeros((2, 2, 2)), "shuffle", "A"),
        {},
        r"^video must have a multiple of 4 frames \(>= 4\) .* got 2$",
    ),
    (
        (np.zeros((3, 4)), "puzzle", "A"),
        {"kind": "image"},
        r"^image must have even height and width; got \(3, 4\)$",
    ),
    (
        (np.zeros((4, 5, 3)), "puzzle", "B"),
        {"kind": "image"},
        r"^image must have even height and width; got \(4, 5\)$",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "pattern"), BAD_TRANSFORMS)
def test_bad_apply_transform(args, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        apply_transform(*args, **kwargs)


def test_bad_sample_and_prompt_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(
        ValueError, match=r"^reverse_prob must be in \[0, 1\]; got 1\.5$"
    ):
        sample_transform(_VID, "reverse", rng, reverse_prob=1.5)
    with pytest.raises(
        ValueError, match=r"^reverse_prob must be in \[0, 1\]; got nan$"
    ):
        sample_transform(_VID, "reverse", rng, reverse_prob=float("nan"))
    with pytest.raises(ValueError, match=r"valid names: flip, puzzle, rotate$"):
        sample_transform(_IMG, "shuffle", rng, kind="image")
    with pytest.raises(ValueError, match=r"^video must have >= 2 frames to reverse"):
        sample_transform(np.zeros((1, 2, 2)), "reverse", rng)
    with pytest.raises(ValueError, match=r"valid names: reverse, rotate, shuffle$"):
        transform_options("puzzle")
    with pytest.raises(ValueError, match=r"valid names: reverse, rotate, shuffle$"):
        pretext_prompt("flip")
    with pytest.raises(ValueError, match=r"valid names: flip, puzzle, rotate$"):
        viss_prompt("q?", "reverse", "image")
    for question in ["", "   \n", None]:
        with pytest.raises(
            ValueError, match=r"^question must be a non-empty string; got "
        ):
            viss_prompt(question, "rotate")


BAD_REWARD_CALLS = [
    (
        pretext_accuracy_reward,
        {"transform_label": ["A"]},
        r"^transform_label must have one entry per completion \(2\); got 1$",
    ),
    (
        transform_reward,
        {"transform_label": ["A", "B", "C"]},
        r"^transform_label must have one entry per completion \(2\); got 3$",
    ),
    (
        answer_accuracy_reward,
        {"solution": []},
        r"^solution must have one entry per completion \(2\); got 0$",
    ),
    (
        viss_reward,
        {"transform_label": ["A", "B"], "solution": ["A"]},
        r"^solution must have one entry per completion \(2\); got 1$",
    ),
    (
        viss_reward,
        {"transform_label": ["A"], "solution": ["A", "B"]},
        r"^transform_label must have one entry per completion \(2\); got 1$",
    ),
    (
        pretext_accuracy_reward,
        {},
        r"^transform_label is required \(a dataset column\); got None$",
    ),
    (
        viss_reward,
        {"transform_label": ["A", "B"]},
        r"^solution is required \(a dataset column\); got None$",
    ),
    (answer_accuracy_reward, {"solution": None}, r"^solution is required"),
]


@pytest.mark.parametrize(("fn", "columns", "pattern"), BAD_REWARD_CALLS)
def test_bad_reward_columns(fn, columns, pattern):
    completions = ["<transform>A</transform><answer>A</answer>"] * 2
    with pytest.raises(ValueError, match=pattern):
        fn(prompts=["p", "p"], completions=completions, **columns)


# --- known bugs ---------------------------------------------------------------
