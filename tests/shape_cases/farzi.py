"""Farzi on 24 sequences of a cyclic 8-token language: a bigram language model (the smallest
model that takes soft tokens, so the case compiles in seconds), Ω of two initialisations,
2 synthetic sequences, 3 outer steps."""

import jax
import jax.numpy as jnp

from distill import farzi
from models.model_fns import ModelFns

V, L = 8, 5


def bigram(vocab_size: int) -> ModelFns:
    """``logits = onehot_or_soft(x) @ W``: next-token logits from the current token alone."""

    def init(key, x):
        return {"w": 0.1 * jax.random.normal(key, (vocab_size, vocab_size))}

    def apply(params, x, *, train=False, key=None):
        x = jax.nn.one_hot(x, vocab_size) if jnp.issubdtype(x.dtype, jnp.integer) else x
        return x @ params["w"]

    return ModelFns(init, apply)


def case():
    start = jax.random.randint(jax.random.key(0), (24, 1), 0, V)
    tokens = (start + jnp.arange(L + 1)[None]) % V  # token t+1 = (t + 1) mod V
    settings = farzi.Settings(
        model=bigram(V), n_seqs=2, seq_len=L + 1, latent_dim=4, steps=3, batch_size=8, inner_steps=2,
        eval_every=2,
    )
    # Ω: two random initialisations stacked (pretraining is tested in tests/distill/test_farzi.py).
    inits = [settings.model.init(jax.random.key(k), tokens[:1, :-1]) for k in (1, 2)]
    omega = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *inits)
    return farzi, farzi.Data(tokens, omega=omega), settings
