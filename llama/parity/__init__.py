"""Parity with Hugging Face transformers: the same ids through both models, every hook
point side by side, and the first layer and hook point where they part.

    from llama.parity import compare, load_reference
    ref = load_reference("gguf", path, torch.float32)        # transformers, same file
    report = compare(model, tokenizer, ref, ["The capital of France is"])
    report.first_divergence        # None, or where and why (a Divergence)
    print(report.table()); report.to_json(); report.exit_code

`scripts/parity.py` (the `llama-parity` command, and `scripts.parity.check(path)`, the
same from a path) does the loading: our model with weights.load_model, transformers'
from the same files, the memory estimate, and the choice to run the two models together
or one after the other. This package never imports weights or tokenizer: it compares
models it is handed, so it serves any loaded model (the studio's, a test's).

Modules: families (which transformers value each hook point compares with, per model
family: Llama and GPT-2), reference (the transformers side), compare (running and
diffing), layerwise (one layer of each side at a time), tokens (the tokenizer check and
its corpus), report (the dataclasses, table and JSON).
docs/PARITY.md explains the columns and how the first divergence is found.
"""

from .compare import (
    DEFAULT_PROMPTS,
    ParityInputError,
    SideRun,
    build_report,
    comparable_names,
    compare,
    config_diffs,
    default_tol,
    encode_prompts,
    run_ours,
    run_reference,
)
from .families import FAMILIES, GPT2_FAMILY, LLAMA, Family, Source, family_for, family_for_model
from .reference import (
    INSTALL,
    Reference,
    ReferenceUnavailable,
    load_reference,
    load_reference_tokenizer,
    reference_from_ours,
    require_transformers,
)
from .report import (
    ConfigDiff,
    Divergence,
    ParityReport,
    PointDiff,
    Problem,
    PromptResult,
    TokenizerCase,
    TokenizerCheck,
    format_table,
)
from .tokens import CORPUS, compare_tokenizers

__all__ = [
    "compare",
    "build_report",
    "run_ours",
    "run_reference",
    "SideRun",
    "encode_prompts",
    "comparable_names",
    "config_diffs",
    "default_tol",
    "DEFAULT_PROMPTS",
    "ParityInputError",
    "Family",
    "Source",
    "FAMILIES",
    "LLAMA",
    "GPT2_FAMILY",
    "family_for",
    "family_for_model",
    "INSTALL",
    "Reference",
    "ReferenceUnavailable",
    "require_transformers",
    "load_reference",
    "load_reference_tokenizer",
    "reference_from_ours",
    "ParityReport",
    "PromptResult",
    "PointDiff",
    "Divergence",
    "Problem",
    "ConfigDiff",
    "TokenizerCase",
    "TokenizerCheck",
    "format_table",
    "CORPUS",
    "compare_tokenizers",
]
