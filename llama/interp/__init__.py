"""The standard interpretability experiments, on any model of this project (Llama, GPT-2).

    from llama.interp import patch_sweep, logit_attribution, logit_diff_metric
    metric = logit_diff_metric(model, clean_ids, corrupt_ids, " Paris", " Rome", tokenizer=tok)
    scores = patch_sweep(model, clean_ids, corrupt_ids, metric, site="resid_post")  # (n_layers, T)
    parts = logit_attribution(model, ids, target, position=-1)   # part name -> float

Modules (each built on the public API of llama.hooks; docs/INTERP.md has examples):

    patching      activation patching: a clean value into a corrupted run, place by place
                  (sites resid_pre/mid/post, attn_out, mlp_out, heads, kv_heads)
    attribution   direct logit attribution through the final norm with its scale frozen
    ablation      zero / mean ablation of each head, as a layer x head map
    steering      a residual-stream direction from two prompts, added during generation
    head_scores   previous-token, first-token (sink) and induction scores per head
    metrics       the normalised logit difference (clean 1, corrupted 0), log-probability
    runner        many edited runs of one prompt, batched into few forwards

Every function takes token ids (a list or a (1, T) tensor) or text with tokenizer=, and
answer tokens as ids or as single-token text with tokenizer=. The model's KV cache is reset
after each experiment.
"""

from .ablation import MODES, ablated_logits, head_ablation_sweep
from .attribution import FrozenNorm, LogitAttribution, attribution, logit_attribution
from .common import HeadMap, InterpError, answer_id, query_heads_of
from .head_scores import (
    attention_head_scores,
    first_token_scores,
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
)
from .metrics import LogitDiffMetric, LogProbMetric, logit_diff, logit_diff_metric, logprob_metric
from .patching import (
    KV_PARTS,
    POSITION_SITES,
    SITES,
    PatchResult,
    patch_sweep,
    patched_logits,
    patching,
    site_hooks,
)
from .runner import auto_batch_size
from .steering import (
    SteeredGeneration,
    SteeringTopK,
    SteeringVector,
    steer,
    steered_generation,
    steering_topk,
    steering_vector,
)

__all__ = [
    "InterpError",
    "HeadMap",
    "answer_id",
    "query_heads_of",
    # patching
    "SITES",
    "POSITION_SITES",
    "KV_PARTS",
    "PatchResult",
    "patching",
    "patch_sweep",
    "patched_logits",
    "site_hooks",
    "auto_batch_size",
    # metrics
    "logit_diff",
    "LogitDiffMetric",
    "logit_diff_metric",
    "LogProbMetric",
    "logprob_metric",
    # attribution
    "LogitAttribution",
    "FrozenNorm",
    "attribution",
    "logit_attribution",
    # ablation
    "MODES",
    "head_ablation_sweep",
    "ablated_logits",
    # head scores
    "attention_head_scores",
    "previous_token_scores",
    "first_token_scores",
    "induction_scores",
    "repeated_random_tokens",
    # steering
    "SteeringVector",
    "steering_vector",
    "steer",
    "SteeringTopK",
    "steering_topk",
    "SteeredGeneration",
    "steered_generation",
]
