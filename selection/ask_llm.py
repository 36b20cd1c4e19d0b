"""ASK-LLM sampling (dissertation Ch. 2, §2.3.1, Algorithm 1).

Each training example is wrapped in the dissertation's prompt (Figure 2.3), a proxy
LM reads it, and the example's quality score is the softmax probability of the next
token being "yes":

    score(x) = P_M("yes" | make_prompt(x)) = softmax(M(prompt))_yes.

The top-``k`` scores are kept (Alg. 1, line 5; :func:`selection.select.top_k`).

The scorer is generic over the LM: any callable ``lm(tokens, lengths) -> (n, V)``
returning the logits of the token that follows ``tokens[i, :lengths[i]]``.
:func:`causal_lm` turns a causal LM ``apply(params, tokens) -> (n, L, V)`` (e.g.
:func:`models.transformer.transformer`) into such a callable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_int

__all__ = [
    "PROMPT_TEMPLATE",
    "make_prompt",
    "p_yes",
    "causal_lm",
    "pad_prompts",
    "ask_llm_scores",
]

PROMPT_TEMPLATE = (
    "###\n"
    "{example}\n"
    "###\n"
    "\n"
    "Does the previous paragraph demarcated within ### and ### contain informative signal "
    "for pre-training a large-language model? An informative datapoint should be "
    "well-formatted, contain some usable knowledge of the world, and strictly NOT have any "
    "harmful, racist, sexist, etc. content.\n"
    "\n"
    "OPTIONS:\n"
    "- yes\n"
    "- no"
)
"""The ASK-LLM prompt of dissertation Figure 2.3; ``{example}`` is the training text."""


def make_prompt(example: str, template: str = PROMPT_TEMPLATE) -> str:
    """``template`` with ``{example}`` replaced by the training example (Alg. 1, line 3)."""
    if not isinstance(example, str):
        raise TypeError(f"example: expected a str, got {type(example).__name__}")
    if not isinstance(template, str) or "{example}" not in template:
        raise ValueError("template: expected a str containing '{example}'")
    return template.replace("{example}", example)


def p_yes(lm: Callable, tokens: Any, lengths: Any, yes_id: int, *, no_id: int | None = None) -> jax.Array:
    """``P("yes" | prompt)`` under an LM given as a next-token-logits callable.

    Args:
      lm: ``lm(tokens (n, L) int, lengths (n,) int) -> (n, V)`` logits of the token
        following ``tokens[i, :lengths[i]]``.
      tokens: int ``(n, L)`` right-padded prompt tokens.
      lengths: int ``(n,)`` prompt lengths, in ``[1, L]``.
      yes_id: vocabulary id of "yes".
      no_id: optional id of "no": then ``P(yes) / (P(yes) + P(no))`` (restricted to the
        two options); default the plain softmax probability, as in the dissertation.

    Returns:
      ``(n,)`` probabilities.
    """
    if not callable(lm):
        raise TypeError(f"lm: expected a callable lm(tokens, lengths) -> logits, got {type(lm).__name__}")
    check_array(tokens, "tokens", ndim=2, kind="int")
    check_array(lengths, "lengths", shape=(tokens.shape[0],), kind="int")
    logits = lm(tokens, lengths)
    if not hasattr(logits, "shape") or logits.ndim != 2 or logits.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"lm: expected (n, V) = ({tokens.shape[0]}, V) next-token logits, got "
            f"{getattr(logits, 'shape', type(logits).__name__)}"
        )
    v = logits.shape[1]
    yes_id = check_int(yes_id, "yes_id", min_value=0, max_value=v - 1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if no_id is None:
        return jnp.exp(logp[:, yes_id])
    no_id = check_int(no_id, "no_id", min_value=0, max_value=v - 1)
    return jax.nn.softmax(logp[:, jnp.asarray([yes_id, no_id])], axis=-1)[:, 0]


def causal_lm(apply: Callable, params: Any) -> Callable:
    """Adapter: a causal LM ``apply(params, tokens) -> (n, L, V)`` as ``lm(tokens, lengths) -> (n, V)``.

    The next-token logits of prompt ``i`` are the LM's output at position
    ``lengths[i] − 1`` (causality makes the right padding irrelevant). Works with
    :func:`models.transformer.transformer` (``apply = model.apply``).
    """
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")

    @jax.jit
    def lm(tokens, lengths):
        out = apply(params, tokens)
        return jnp.take_along_axis(out, (lengths - 1)[:, None, None], axis=1)[:, 0]

    return lm


def pad_prompts(
    token_lists: Sequence[Any], *, pad_id: int = 0, max_len: int | None = None, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token sequences into ``(n, L)``; longer ones keep their *last* ``max_len``
    tokens (the question at the end of the prompt must survive truncation).

    ``L`` is the longest (truncated) prompt, or ``length`` when given (>= that).

    Returns:
      ``(tokens int32 (n, L), lengths int32 (n,))``.
    """
    if len(token_lists) == 0:
        raise ValueError("token_lists: expected at least one prompt, got 0")
    seqs = [np.asarray(t, np.int32).ravel() for t in token_lists]
    if any(s.size == 0 for s in seqs):
        raise ValueError("token_lists: every prompt must have at least one token")
    if max_len is not None:
        max_len = check_int(max_len, "max_len", min_value=1)
        seqs = [s[-max_len:] for s in seqs]
    longest = max(s.size for s in seqs)
    if length is None:
        length = longest
    else:
        length = check_int(length, "length", min_value=longest)
    out = np.full((len(seqs), length), pad_id, np.int32)
    for i, s in enumerate(seqs):
        out[i, : s.size] = s
    return out, np.asarray([s.size for s in seqs], np.int32)


def ask_llm_scores(
    lm: Callable,
    examples: Sequence[str],
    tokenize: Callable[[str], Any],
    yes_id: int,
    *,
    no_id: int | None = None,
    template: str = PROMPT_TEMPLATE,
    batch_size: int = 64,
    pad_id: int = 0,
    max_len: int | None = None,
) -> np.ndarray:
    """ASK-LLM scores of text examples (Alg. 1, lines 1–4).

    Args:
      lm: next-token-logits callable (see :func:`p_yes`; :func:`causal_lm` for our LMs).
      examples: the training texts.
      tokenize: ``str -> int token ids`` of the LM's vocabulary.
      yes_id, no_id: see :func:`p_yes`.
      template: prompt with an ``{example}`` slot (default :data:`PROMPT_TEMPLATE`).
      batch_size: prompts per LM call (every batch padded to one length: one compile).
      pad_id: padding token.
      max_len: the LM's context; longer prompts keep their last ``max_len`` tokens, and
        every batch is padded to exactly ``max_len`` (one compiled shape for all calls).

    Returns:
      ``(n,)`` float ``P("yes" | prompt)``; keep the top-k with ``select.top_k``.
    """
    if isinstance(examples, str) or not all(isinstance(e, str) for e in examples):
        raise TypeError("examples: expected a sequence of str")
    if not callable(tokenize):
        raise TypeError(f"tokenize: expected a callable str -> token ids, got {type(tokenize).__name__}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    tokens, lengths = pad_prompts([tokenize(make_prompt(e, template)) for e in examples], pad_id=pad_id, max_len=max_len, length=max_len)
    n = tokens.shape[0]
    n_pad = (-n) % batch_size if n > batch_size else 0
    if n_pad:
        tokens = np.concatenate([tokens, np.repeat(tokens[:1], n_pad, 0)])
        lengths = np.concatenate([lengths, np.repeat(lengths[:1], n_pad)])
    out = [
        np.asarray(p_yes(lm, tokens[i : i + batch_size], lengths[i : i + batch_size], yes_id, no_id=no_id))
        for i in range(0, tokens.shape[0], batch_size)
    ]
    return np.concatenate(out)[:n]
