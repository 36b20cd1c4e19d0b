"""ASK-LLM: P("yes") under a hand-built callable LM, and the causal-LM adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selection import ask_llm

VOCAB = ["<pad>", "yes", "no", "good", "bad", "###", "other"]


def _tokenize(text):
    return np.asarray([VOCAB.index(w) if w in VOCAB else VOCAB.index("other") for w in text.split()], np.int32)


def _hand_lm(tokens, lengths):
    """Next-token logits: yes-logit = 2·#good − 2·#bad among the real tokens, no-logit = 0."""
    valid = jnp.arange(tokens.shape[1])[None] < lengths[:, None]
    good = jnp.sum((tokens == 3) & valid, axis=1)
    bad = jnp.sum((tokens == 4) & valid, axis=1)
    logits = jnp.zeros((tokens.shape[0], len(VOCAB)))
    return logits.at[:, 1].set(2.0 * (good - bad))


def test_prompt_template_is_the_dissertations():
    p = ask_llm.make_prompt("The cat sat.")
    assert p.startswith("###\nThe cat sat.\n###\n")
    assert "contain informative signal for pre-training a large-language model?" in p
    assert p.endswith("OPTIONS:\n- yes\n- no")


def test_p_yes_on_hand_built_lm():
    texts = ["good good", "bad", "nothing here", "good bad good bad"]
    s = ask_llm.ask_llm_scores(_hand_lm, texts, _tokenize, yes_id=1, batch_size=3)
    # the template adds no good/bad words, so logit_yes = 2·(good − bad); 6 other logits are 0
    expect = [np.exp(z) / (np.exp(z) + 6) for z in (4.0, -2.0, 0.0, 0.0)]
    np.testing.assert_allclose(s, expect, rtol=1e-6)
    two_way = ask_llm.ask_llm_scores(_hand_lm, texts, _tokenize, yes_id=1, no_id=2)
    np.testing.assert_allclose(two_way, jax.nn.sigmoid(jnp.asarray([4.0, -2.0, 0.0, 0.0])), rtol=1e-6)
    from selection.select import top_k

    np.testing.assert_array_equal(top_k(s, 1), [0])


def test_causal_lm_adapter_reads_the_last_real_position():
    from models.transformer import transformer

    model = transformer(len(VOCAB), max_len=16, d_model=16, n_heads=2, n_layers=1)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 4), jnp.int32))  # compiles faster than eager
    lm = ask_llm.causal_lm(model.apply, params)
    seqs = [np.array([5, 3, 6, 1]), np.array([5, 4])]
    tokens, lengths = ask_llm.pad_prompts(seqs)
    out = lm(jnp.asarray(tokens), jnp.asarray(lengths))
    full = jax.jit(model.apply)(params, jnp.asarray(tokens))
    for i, s in enumerate(seqs):  # padding after the prompt does not change its next-token logits
        np.testing.assert_allclose(out[i], full[i, len(s) - 1], rtol=1e-5, atol=1e-6)
    p = ask_llm.p_yes(lm, tokens, lengths, 1)
    assert p.shape == (2,) and np.all((np.asarray(p) > 0) & (np.asarray(p) < 1))


def test_pad_prompts_keeps_the_tail():
    tokens, lengths = ask_llm.pad_prompts([np.arange(1, 6), np.arange(1, 3)], max_len=3)
    np.testing.assert_array_equal(tokens, [[3, 4, 5], [1, 2, 0]])
    np.testing.assert_array_equal(lengths, [3, 2])


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="lm"):
        ask_llm.p_yes("not an lm", np.zeros((1, 2), np.int32), np.ones(1, np.int32), 1)
    with pytest.raises(ValueError, match="yes_id"):
        ask_llm.p_yes(_hand_lm, np.zeros((1, 2), np.int32), np.ones(1, np.int32), 99)
    with pytest.raises(ValueError, match="lengths"):
        ask_llm.p_yes(_hand_lm, np.zeros((2, 2), np.int32), np.ones(3, np.int32), 1)
    with pytest.raises(TypeError, match="examples"):
        ask_llm.ask_llm_scores(_hand_lm, "a string", _tokenize, 1)
    with pytest.raises(ValueError, match="template"):
        ask_llm.make_prompt("x", template="no slot")
