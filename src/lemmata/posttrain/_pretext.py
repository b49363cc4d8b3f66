r"""Self-supervised pretext rewards for visual RL: Pretext-GRPO and ViSS-R1.

A pretext task applies a known transformation to the visual input (rotate,
flip or swap quadrants of an image; rotate, reverse or swap frame groups of a
video) and asks the policy which one it was; the answer is checked against the
label, so no human annotation is needed. Pretext-GRPO [1]_ rewards that answer.
ViSS-R1 [1]_ puts the pretext question and the user's question about the
*original* input into one prompt over the transformed input and rewards the
format, the transformation and the answer.

The reward functions have the signature of TRL's ``GRPOTrainer`` reward
functions, ``f(prompts, completions, **kwargs) -> list[float]``, with the labels
passed as dataset columns (``transform_label``, ``solution``), so they can be
handed to ``GRPOTrainer(reward_funcs=[...])`` directly.

References
----------
.. [1] Fang, Song, Wu, Sun, Wu, Chan. "ViSS-R1: Self-Supervised Reinforcement
   Video Reasoning." 2025. arXiv:2511.13054.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_TRANSFORMS",
    "OPTION_LETTERS",
    "VIDEO_TRANSFORMS",
    "answer_accuracy_reward",
    "apply_transform",
    "format_reward",
    "joint_format_reward",
    "parse_completion",
    "pretext_accuracy_reward",
    "pretext_prompt",
    "sample_transform",
    "transform_options",
    "transform_reward",
    "viss_prompt",
    "viss_reward",
]

OPTION_LETTERS = "ABCDEF"
_PAIRS = tuple(itertools.combinations(range(4), 2))
_PAIR_TEXT = tuple(f"parts {i + 1} and {j + 1} swapped" for i, j in _PAIRS)

# name -> option descriptions, in label order (A, B, ...)
IMAGE_TRANSFORMS: dict[str, tuple[str, ...]] = {
    "rotate": ("not rotated", "rotated 90 degrees", "rotated 180 degrees",
               "rotated 270 degrees"),
    "flip": ("not flipped", "flipped horizontally", "flipped vertically"),
    "puzzle": _PAIR_TEXT,
}  # fmt: skip
VIDEO_TRANSFORMS: dict[str, tuple[str, ...]] = {
    "rotate": IMAGE_TRANSFORMS["rotate"],
    "reverse": ("played forward", "played in reverse"),
    "shuffle": _PAIR_TEXT,
}

_FORMAT = re.compile(
    r"\s*(?:<think>.*?</think>\s*)?<answer>\s*(?P<answer>.+?)\s*</answer>\s*",
    re.DOTALL,
)
_JOINT_FORMAT = re.compile(
    r"\s*(?:<think>.*?</think>\s*)?<transform>\s*(?P<transform>.+?)\s*</transform>"
    r"\s*<answer>\s*(?P<answer>.+?)\s*</answer>\s*",
    re.DOTALL,
)
_TAG = {
    tag: re.compile(rf"<{tag}>\s*(.*?)\s*</{tag}>", re.DOTALL)
    for tag in ("transform", "answer")
}


def _table(kind: str) -> dict[str, tuple[str, ...]]:
    if kind == "image":
        return IMAGE_TRANSFORMS
    if kind == "video":
        return VIDEO_TRANSFORMS
    raise ValueError(f"kind must be 'image' or 'video'; got {kind!r}")


def transform_options(name: str, kind: str = "video") -> tuple[str, ...]:
    """Descriptions of the options of transformation ``name``, in label order.

    Parameters
    ----------
    name : str
        For images ``"rotate"``, ``"flip"`` or ``"puzzle"``; for videos
        ``"rotate"``, ``"reverse"`` or ``"shuffle"``.
    kind : {"image", "video"}, default="video"

    Returns
    -------
    tuple of str
        Option ``i`` has the letter ``OPTION_LETTERS[i]``.
    """
    table = _table(kind)
    if name not in table:
        raise ValueError(
            f"unknown {kind} transformation {name!r}; valid names: "
            f"{', '.join(sorted(table))}"
        )
    return table[name]


def _label_index(name: str, kind: str, label: Any) -> int:
    n = len(transform_options(name, kind))
    letters = OPTION_LETTERS[:n]
    if isinstance(label, str) and len(label) == 1 and label.upper() in letters:
        return letters.index(label.upper())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if 0 <= label < n:
            return int(label)
    raise ValueError(
        f"label of {kind} transformation {name!r} must be one of {list(letters)} "
        f"or an index in [0, {n}); got {label!r}"
    )


def _swap(x: np.ndarray, axis: int, groups: int, pair: tuple[int, int]) -> np.ndarray:
    parts = np.split(x, groups, axis=axis)
    i, j = pair
    parts[i], parts[j] = parts[j], parts[i]
    return np.concatenate(parts, axis=axis)


def _check_frames(video: np.ndarray, name: str) -> None:
    n = video.shape[0]
    if name == "reverse" and n < 2:
        raise ValueError(f"video must have >= 2 frames to reverse; got {n}")
    if name == "shuffle" and (n < 4 or n % 4):
        raise ValueError(
            "video must have a multiple of 4 frames (>= 4) to swap frame groups; "
            f"got {n}"
        )


def apply_transform(
    x: Any, name: str, label: Any, *, kind: str = "video"
) -> np.ndarray:
    """Apply option ``label`` of transformation ``name`` to an image or video.

    Parameters
    ----------
    x : array-like
        An image of shape (H, W, ...) or a video of shape (T, H, W, ...).
    name : str
        See :func:`transform_options`.
    label : str or int
        Option letter (``"A"``, ...) or index.
    kind : {"image", "video"}, default="video"

    Returns
    -------
    ndarray
        Rotations are counter-clockwise in the (H, W) plane (``np.rot90``);
        "horizontal" flips mirror left-right. The puzzle numbers the quadrants
        top-left, top-right, bottom-left, bottom-right; the video shuffle numbers
        the four frame groups (quarters of the frames) in time order. Option
        ``k`` of a swap exchanges the ``k``-th pair of
        ``itertools.combinations(range(4), 2)``, as the prompt lists them; the
        four groups are fixed, because the six options are exactly those pairs.
    """
    k = _label_index(name, kind, label)
    x = np.asarray(x)
    axes = (0, 1) if kind == "image" else (1, 2)
    if x.ndim < max(axes) + 1:
        raise ValueError(
            f"{kind} must have at least {max(axes) + 1} dimensions; got shape {x.shape}"
        )
    if kind == "video":
        _check_frames(x, name)
    if name == "rotate":
        return np.rot90(x, k, axes=axes).copy()
    if name == "flip":
        return x.copy() if k == 0 else np.flip(x, axis=1 if k == 1 else 0).copy()
    if name == "reverse":
        return x[::-1].copy() if k == 1 else x.copy()
    if name == "shuffle":
        return _swap(x, 0, 4, _PAIRS[k])
    h, w = x.shape[0], x.shape[1]
    if h % 2 or w % 2:
        raise ValueError(f"image must have even height and width; got {(h, w)}")
    quads = [x[:h // 2, :w // 2], x[:h // 2, w // 2:], x[h // 2:, :w // 2],
             x[h // 2:, w // 2:]]  # fmt: skip
    i, j = _PAIRS[k]
    quads[i], quads[j] = quads[j], quads[i]
    top = np.concatenate(quads[:2], axis=1)
    return np.concatenate([top, np.concatenate(quads[2:], axis=1)], axis=0)


def sample_transform(
    x: Any,
    name: str,
    rng: np.random.Generator,
    *,
    kind: str = "video",
    reverse_prob: float = 0.55,
) -> tuple[np.ndarray, str]:
    """Draw an option of ``name`` at random, apply it, and return its letter.

    Options are uniform, except ``"reverse"``, which reverses with probability
    ``reverse_prob`` (0.55 in the released code). Draw and application happen
    together, so the label never travels apart from the input.

    Returns
    -------
    transformed : ndarray
    label : str
        Option letter.
    """
    n = len(transform_options(name, kind))
    if not 0 <= reverse_prob <= 1:
        raise ValueError(f"reverse_prob must be in [0, 1]; got {reverse_prob!r}")
    if name == "reverse":
        k = int(rng.random() < reverse_prob)
    else:
        k = int(rng.integers(n))
    return apply_transform(x, name, k, kind=kind), OPTION_LETTERS[k]


def _options_text(name: str, kind: str) -> str:
    opts = transform_options(name, kind)
    return " ".join(f"{OPTION_LETTERS[i]}. {o}." for i, o in enumerate(opts))


def pretext_prompt(name: str, kind: str = "video") -> str:
    """The Pretext-GRPO question: which option of ``name`` was applied.

    The letter goes inside ``<answer>``; a ``<think>`` span may come first.
    """
    return (
        f"This {kind} may have been transformed. Which of these was applied? "
        f"{_options_text(name, kind)} Think in <think> </think>, then give the "
        "letter in <answer> </answer>."
    )


def viss_prompt(question: str, name: str, kind: str = "video") -> str:
    """The joint ViSS-R1 prompt: identify the transformation, then answer.

    Parameters
    ----------
    question : str
        The user's question about the original (untransformed) input, with its
        options if any; must not be empty.
    name : str
        The transformation that was applied.
    kind : {"image", "video"}, default="video"
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string; got {question!r}")
    return (
        f"This {kind} was transformed by one of these: {_options_text(name, kind)} "
        "First identify the transformation and give its letter in <transform> "
        f"</transform>. Then undo it in your mind and answer the question about the "
        f"original {kind} in <answer> </answer>. You may think in <think> </think> "
        f"first. Question: {question.strip()}"
    )


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence) and completion:
        return _text(completion[-1])
    return ""


def parse_completion(completion: Any, *, joint: bool = True) -> dict[str, str] | None:
    """The tags of a well-formed completion, or ``None`` if it is malformed.

    Parameters
    ----------
    completion : str or list of dict
        Plain text, or TRL's conversational form (the last message's
        ``content`` is read).
    joint : bool, default=True
        ``<transform>`` then ``<answer>`` (ViSS-R1) when True; ``<answer>`` alone
        (Pretext-GRPO) when False. An optional ``<think>`` span may come first.
    """
    match = (_JOINT_FORMAT if joint else _FORMAT).fullmatch(_text(completion))
    return None if match is None else match.groupdict()


def _tag(completion: Any, tag: str) -> str | None:
    found = _TAG[tag].findall(_text(completion))
    return found[-1] if found else None


def _same(answer: str | None, solution: Any) -> bool:
    if answer is None:
        return False
    target = str(solution).strip()
    got = answer.strip()
    try:
        return float(got) == float(target)
    except ValueError:
        return got.rstrip(".").upper() == target.rstrip(".").upper()


def _labels(name: str, values: Any, n: int) -> list:
    if values is None:
        raise ValueError(f"{name} is required (a dataset column); got None")
    values = list(values)
    if len(values) != n:
        raise ValueError(
            f"{name} must have one entry per completion ({n}); got {len(values)}"
        )
    return values


def format_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """1.0 if the completion is ``[<think>..</think>] <answer>..</answer>``, else 0.

    TRL reward-function signature; ``prompts`` and other columns are ignored.
    """
    return [float(parse_completion(c, joint=False) is not None) for c in completions]


def joint_format_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """1.0 if the completion is ``[<think>..</think>] <transform>..</transform>
    <answer>..</answer>`` (the ViSS-R1 format), else 0."""
    return [float(parse_completion(c, joint=True) is not None) for c in completions]


def pretext_accuracy_reward(
    prompts=None, completions=(), transform_label=None, **kwargs
) -> list[float]:
    """Pretext-GRPO accuracy: 1.0 if ``<answer>`` holds the transformation letter.

    ``transform_label`` is the dataset column of option letters.
    """
    labels = _labels("transform_label", transform_label, len(completions))
    return [
        float(_same(_tag(c, "answer"), y))
        for c, y in zip(completions, labels, strict=True)
    ]


def transform_reward(
    prompts=None, completions=(), transform_label=None, weight: float = 0.5, **kwargs
) -> list[float]:
    """ViSS-R1 transformation reward: ``weight`` (0.5) if ``<transform>`` is right."""
    labels = _labels("transform_label", transform_label, len(completions))
    return [
        float(weight * _same(_tag(c, "transform"), y))
        for c, y in zip(completions, labels, strict=True)
    ]


def answer_accuracy_reward(
    prompts=None, completions=(), solution=None, **kwargs
) -> list[float]:
    """1.0 if ``<answer>`` equals ``solution`` (a letter or a number), else 0.

    Letters compare case-insensitively; numbers compare as floats. Only the
    multiple-choice and numeric rewards of ViSS-R1 are implemented.
    """
    labels = _labels("solution", solution, len(completions))
    return [
        float(_same(_tag(c, "answer"), y))
        for c, y in zip(completions, labels, strict=True)
    ]


def viss_reward(
    prompts=None, completions=(), transform_label=None, solution=None, **kwargs
) -> list[float]:
    r"""The joint ViSS-R1 reward, format + transformation + answer.

    .. math::

        r = \mathbb 1[\text{format}]\,\big(1 + 0.5\,\mathbb 1[\hat\tau = \tau]
        + \mathbb 1[\hat y = y]\big)

    :math:`\tau` is ``transform_label`` and :math:`y` is ``solution`` (about the
    original input).

    Notes
    -----
    The released trainer sums three separate reward functions, so a malformed
    completion can still earn the transformation and answer terms there; here a
    malformed completion earns 0 (the design note's reading). Use
    :func:`joint_format_reward`, :func:`transform_reward` and
    :func:`answer_accuracy_reward` as three TRL reward functions for the released
    behaviour.
    """
    labels = _labels("transform_label", transform_label, len(completions))
    answers = _labels("solution", solution, len(completions))
    rewards = []
    for c, tau, y in zip(completions, labels, answers, strict=True):
        tags = parse_completion(c, joint=True)
        if tags is None:
            rewards.append(0.0)
            continue
        rewards.append(
            1.0 + 0.5 * _same(tags["transform"], tau) + _same(tags["answer"], y)
        )
    return rewards
