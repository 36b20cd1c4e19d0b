"""Data-pruning curves on sklearn digits, scorer throughput, and PTB sentence selection.

``python -m benchmarks.pruning [--quick] [--seeds 0 1 2] [--convnet] [--ptb]``

``python -m benchmarks.pruning --record`` wrote ``pruning.json/.png``; ``python -m
benchmarks.pruning --quick --ptb-only --record`` wrote ``pruning_quick_ptb.json/.png``.

1. **Pruning curves** (digits, 1,438 train / 359 test): proxy MLPs are trained on the
   full training set with :func:`selection.train_with_dynamics` (scores, dynamics,
   embeddings = the proxy's last hidden layer); every selector keeps a fraction of the
   training set and a fresh target model (MLP; ConvNet with ``--convnet``) is trained on
   it for a fixed number of Adam steps (minibatches drawn ∝ the subset's weights, so
   CRAIG's weights enter as sampling weights). Test accuracy, mean ± std over seeds.
2. **Throughput**: examples/s of every scorer on CPU (jitted, after warm-up).
3. **PTB** (``--ptb``): a small Transformer LM trained on PTB is the Ask-LLM scorer
   (P("yes") under the dissertation's prompt) and the perplexity scorer; DENSITY uses
   its mean token embedding. A fresh LM is trained on each selection of training
   sentences until its perplexity on 500 PTB validation sentences stops improving
   (early stopping: a fixed step count overfits small subsets); test perplexity on 1,000
   PTB test sentences vs fraction kept.

Writes ``NAME.json`` and ``NAME.png`` (``NAME`` = ``--name``, default
``pruning[_quick][_ptb]``) to ``--out`` (default ``runs/``; ``--record``:
``benchmarks/results/``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import format_table, output_dir, parser, timed, train_many, write_result
from benchmarks._common import draw_weighted as _draw
from distill import train
from distill.data import load_digits, standardize
from models.convnet import convnet
from models.mlp import mlp
from selection import coresets, density, scores, select
from selection.s2l import s2l
from selection.semdedup import semdedup, semdedup_fraction
from selection.training_dynamics import train_with_dynamics

HIDDEN = (128, 128)
TARGET_STEPS = 300
CONVNET_SELECTORS = ("random", "el2n (hard)", "craig", "k-center", "density (ips)")


# ----------------------------------------------------------------------------- selectors


def compute_scores(key, x, y, *, n_proxies, proxy_epochs):
    """Everything the selectors need, from ``n_proxies`` proxy MLPs trained on all data."""
    model = mlp(10, hidden=HIDDEN)
    feats_model = mlp(10, hidden=HIDDEN, features_only=True)
    params, dyns = [], []
    for i in range(n_proxies):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        p, d = train_with_dynamics(k2, model.apply, model.init(k1, x[:1]), optax.adam(1e-3), x, y, epochs=proxy_epochs, batch_size=128)
        params.append(p)
        dyns.append(d)
    batch = (x, y)
    out = {
        "loss": np.asarray(scores.loss(model.apply, params, batch)),
        "el2n": np.asarray(scores.el2n(model.apply, params, batch)),
        "grand": np.asarray(scores.grand(model.apply, params, batch)),
        "margin": np.asarray(scores.margin(model.apply, params, batch)),
        "entropy": np.asarray(scores.entropy(model.apply, params, batch)),
        "forgetting": np.mean([np.asarray(scores.forgetting_events(d.correct)) for d in dyns], axis=0),
        "variability": np.mean([np.asarray(scores.data_map(d.prob_true, d.correct).variability) for d in dyns], axis=0),
        "trajectories": np.concatenate([np.asarray(d.loss).T for d in dyns], axis=1),
        "output_grads": np.asarray(scores.output_gradients(model.apply, params[0], batch)),
        "embeddings": np.asarray(feats_model.apply(params[0], x)),
    }
    out["proxy_train_acc"] = float(np.mean(np.asarray(dyns[0].correct[-1])))
    return out, params


def make_selectors(sc, y, key):
    """name -> f(fraction, seed) -> (indices, weights or None)."""
    n = y.shape[0]
    emb = sc["embeddings"]
    emb_f = jnp.asarray(emb, jnp.float32)
    sd = semdedup(jax.random.fold_in(key, 1), emb_f, n_clusters=10, threshold=0.95)
    dens_key = jax.random.fold_in(key, 2)
    dens = np.maximum(np.asarray(density.density_scores(dens_key, emb_f, n_rows=256, n_concat=2)), 1e-6)
    proto = np.asarray(scores.prototype_distance(jax.random.fold_in(key, 3), emb_f, 10))
    kc_order = coresets.k_center_greedy(emb_f, n - 1, key=jax.random.fold_in(key, 4))
    kc_order = np.concatenate([kc_order, np.setdiff1d(np.arange(n), kc_order)])
    sk = lambda seed, salt: jax.random.fold_in(jax.random.PRNGKey(seed), salt)
    b = lambda f: select.budget(n, f)
    craig_cache = {}

    def craig_sel(f, seed):
        if f not in craig_cache:  # deterministic (lazy greedy): computed once per fraction
            craig_cache[f] = coresets.craig(sc["output_grads"], y, b(f), method="lazy")
        cs = craig_cache[f]
        return cs.indices, cs.weights

    return {
        "random": lambda f, s: (select.random_subset(sk(s, 0), n, b(f)), None),
        "loss (hard)": lambda f, s: (select.top_k(sc["loss"], b(f)), None),
        "el2n (hard)": lambda f, s: (select.top_k(sc["el2n"], b(f)), None),
        "el2n (easy)": lambda f, s: (select.bottom_k(sc["el2n"], b(f)), None),
        "grand (hard)": lambda f, s: (select.top_k(sc["grand"], b(f)), None),
        "forgetting": lambda f, s: (select.top_k(sc["forgetting"] + 1e-6 * sc["el2n"], b(f)), None),
        "datamap ambig.": lambda f, s: (select.top_k(sc["variability"], b(f)), None),
        "margin (low)": lambda f, s: (select.bottom_k(sc["margin"], b(f)), None),
        "entropy (high)": lambda f, s: (select.top_k(sc["entropy"], b(f)), None),
        "prototypes (hard)": lambda f, s: (select.top_k(proto, b(f)), None),
        "ccs (el2n)": lambda f, s: (select.coverage_centric(sk(s, 1), sc["el2n"], b(f), hard_cutoff=0.05), None),
        "density (ips)": lambda f, s: (select.ips_sample(sk(s, 2), dens, b(f)), None),
        "craig": craig_sel,
        "k-center": lambda f, s: (np.sort(kc_order[: b(f)]), None),
        "semdedup": lambda f, s: (semdedup_fraction(sd, f), None),
        "s2l": lambda f, s: (s2l(sk(s, 3), sc["trajectories"], b(f), n_clusters=20), None),
    }


def pruning_curves(model, selectors, x, y, xt, yt, fractions, seeds, *, steps, batch, lr):
    n = y.shape[0]
    keys = jnp.stack([jax.random.PRNGKey(1000 + s) for s in seeds])
    full = train_many(model, keys, np.ones((len(seeds), n)), x, y, xt, yt, steps=steps, batch=batch, lr=lr)
    rows, curves = [], {}
    run_keys = jnp.concatenate([keys] * len(fractions))  # (F·S,) — the same seeds at every fraction
    for name, sel in selectors.items():
        t = time.perf_counter()
        w = np.zeros((len(fractions) * len(seeds), n), np.float32)
        for a, f in enumerate(fractions):
            for i, s in enumerate(seeds):
                idx, wt = sel(f, s)
                w[a * len(seeds) + i, idx] = 1.0 if wt is None else wt
        acc = 100 * train_many(model, run_keys, w, x, y, xt, yt, steps=steps, batch=batch, lr=lr).reshape(len(fractions), len(seeds))
        curves[name] = {"fraction": list(fractions), "mean": acc.mean(1).tolist(), "std": acc.std(1).tolist()}
        row = {"selector": name}
        for f, m, sd in zip(fractions, curves[name]["mean"], curves[name]["std"], strict=True):
            row[f"{int(round(100 * f))}%"] = f"{m:.1f}±{sd:.1f}"
        row["time (s)"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(f"  {name}: {row}", flush=True)
    return {"full_data_acc": [float(100 * full.mean()), float(100 * full.std())], "curves": curves}, rows


# ----------------------------------------------------------------------------- throughput


def throughput(x, y, params_list, *, n_examples, repeats):
    model = mlp(10, hidden=HIDDEN)
    reps = -(-n_examples // x.shape[0])
    xb, yb = jnp.tile(x, (reps, 1, 1, 1))[:n_examples], jnp.tile(y, reps)[:n_examples]
    p1 = params_list[0]
    emb = jnp.asarray(np.random.default_rng(0).normal(size=(n_examples, 128)), jnp.float32)
    fns = {
        "loss": jax.jit(lambda p, b: scores.loss(model.apply, p, b)),
        "el2n (1 model)": jax.jit(lambda p, b: scores.el2n(model.apply, p, b)),
        "grand (1 model)": jax.jit(lambda p, b: scores.grand(model.apply, p, b, block_size=512)),
        "margin": jax.jit(lambda p, b: scores.margin(model.apply, p, b)),
        "entropy": jax.jit(lambda p, b: scores.entropy(model.apply, p, b)),
    }
    rows = []
    for name, fn in fns.items():
        jax.block_until_ready(fn(p1, (xb, yb)))
        _, t = timed(lambda fn=fn: fn(p1, (xb, yb)), repeats=repeats)
        rows.append({"scorer": name, "n": n_examples, "seconds": t, "examples/s": n_examples / t})
    ens = jax.jit(lambda p, b: scores.el2n(model.apply, p, b))
    jax.block_until_ready(ens(params_list, (xb, yb)))
    _, t = timed(lambda: ens(params_list, (xb, yb)), repeats=repeats)
    rows.append({"scorer": f"el2n ({len(params_list)} models)", "n": n_examples, "seconds": t, "examples/s": n_examples / t})
    k = jax.random.PRNGKey(0)
    dfn = lambda: density.density_scores(k, emb, n_rows=256, n_concat=2, width=4.0)
    jax.block_until_ready(dfn())
    _, t = timed(dfn, repeats=repeats)
    rows.append({"scorer": "density (d=128, R=256)", "n": n_examples, "seconds": t, "examples/s": n_examples / t})
    pfn = lambda: scores.prototype_distance(k, emb, 10)
    jax.block_until_ready(pfn())
    _, t = timed(pfn, repeats=repeats)
    rows.append({"scorer": "prototypes (k=10, d=128)", "n": n_examples, "seconds": t, "examples/s": n_examples / t})
    return rows


# ----------------------------------------------------------------------------- PTB


PTB_VOCAB, PTB_MAX_LEN, PTB_SENT_LEN = 5000, 128, 24  # 5k words keep 'yes' (rank 4405) and 'no'


def ptb_sentences(stream, eos, n_max, sent_len=PTB_SENT_LEN):
    """The first ``n_max`` sentences (ending in ``<eos>``) of 3 to ``sent_len`` words."""
    cuts = np.flatnonzero(stream == eos)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    # strict=False: without any <eos>, starts is [0] and cuts empty (no sentence).
    out = [stream[s : e + 1] for s, e in zip(starts, cuts, strict=False) if 4 <= e + 1 - s <= sent_len + 1]
    return out[:n_max]


def pad_sentences(sents, eos, sent_len=PTB_SENT_LEN):
    """``(tokens (m, L + 1), target mask (m, L))``, padded with ``<eos>``."""
    t = np.full((len(sents), sent_len + 1), eos, np.int32)
    m = np.zeros((len(sents), sent_len), np.float32)
    for i, s in enumerate(sents):
        t[i, : len(s)] = s
        m[i, : len(s) - 1] = 1
    return jnp.asarray(t), jnp.asarray(m)


def ptb_data(quick):
    """The corpus, the candidate pool and the dev (early stopping) / test (reported) sentences."""
    from distill.data import load_ptb

    corpus = load_ptb(vocab_size=PTB_VOCAB)
    eos = corpus.vocab.index("<eos>")
    train_s = ptb_sentences(corpus.train, eos, 2000 if quick else 6000)
    return dict(corpus=corpus, eos=eos, train_s=train_s, train=pad_sentences(train_s, eos),
                dev=pad_sentences(ptb_sentences(corpus.valid, eos, 500), eos),
                test=pad_sentences(ptb_sentences(corpus.test, eos, 1000), eos))


class LMTrainer:
    """Adam(3e-3) on a small Transformer LM, minibatches of 32 drawn ∝ a weight vector."""

    def __init__(self, dev):
        from models.transformer import transformer

        self.lm = transformer(PTB_VOCAB, max_len=PTB_MAX_LEN, d_model=64, n_heads=2, n_layers=2)
        self.opt = optax.adam(3e-3)
        self.dev = dev
        self.ppl_of = jax.jit(lambda p, t, m: jnp.exp(self._nll(p, t, m)))
        self.train_chunk = jax.jit(self._train_chunk)

    def _nll(self, p, t, m):
        logp = jax.nn.log_softmax(self.lm.apply(p, t[:, :-1]))
        nll = -jnp.take_along_axis(logp, t[:, 1:, None], -1)[..., 0]
        return jnp.sum(nll * m) / jnp.sum(m)

    def _train_chunk(self, state, cdf, toks, mask, keys):
        """``len(keys)`` Adam steps; each step's batch is its key, the loss draws 32 rows ∝ ``w``."""
        def loss(p, k, _key):
            idx = _draw(k, cdf, 32)
            return self._nll(p, toks[idx], mask[idx])

        return train.scan(state, keys, keys[0], loss=loss, optimizer=self.opt)[0]

    def valid_ppl(self, p):
        return float(self.ppl_of(p, *self.dev))

    def train_lm(self, key, w, toks, mask, max_steps, *, every=25, patience=4, dev=True):
        """Adam on minibatches drawn ∝ ``w``; with ``dev``, early stopping on dev perplexity.

        A fixed step budget overfits small subsets (10 % of the pool is ~2k tokens for a
        5k-word vocabulary) and under-trains large ones, so every subset is trained until
        its dev perplexity stops improving — the model selection any practitioner would do.
        """
        k_init, key = jax.random.split(key)
        state = train.init(self.lm.init(k_init, toks[:1, :-1]), self.opt)
        p = state.params
        cdf = jnp.cumsum(jnp.asarray(w, jnp.float32))
        best, best_p, best_step, bad = np.inf, p, 0, 0
        for start in range(0, max_steps, every):
            key, k = jax.random.split(key)
            state = self.train_chunk(state, cdf, toks, mask, jax.random.split(k, every))
            p = state.params
            if not dev:
                best_p, best_step = p, start + every
                continue
            d = self.valid_ppl(p)
            if d < best:
                best, best_p, best_step, bad = d, p, start + every, 0
            else:
                bad += 1
                if bad >= patience:
                    break
        return best_p, best_step


def ptb_scoring_lm(trainer, data, quick):
    """The scoring LM, trained on PTB text *outside* the candidate pool (a later slice of the stream)."""
    t0 = time.perf_counter()
    corpus, eos = data["corpus"], data["eos"]
    pool_end = int(np.flatnonzero(corpus.train == eos)[len(data["train_s"]) * 2])
    rest = corpus.train[pool_end:]
    wins = rest[: (len(rest) // 65) * 65].reshape(-1, 65)[:20000]
    proxy_steps = 300 if quick else 1500
    proxy, _ = trainer.train_lm(jax.random.PRNGKey(7), jnp.ones(wins.shape[0]), jnp.asarray(wins),
                                jnp.ones((wins.shape[0], 64)), proxy_steps, dev=False)
    print(f"  scoring LM: {proxy_steps} steps, valid ppl {trainer.valid_ppl(proxy):.1f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return proxy, proxy_steps


def _timed_once(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ptb_scores(trainer, proxy, data):
    """Ask-LLM P(yes), perplexity and DENSITY scores of the pool under the scoring LM, with throughput rows."""
    from distill.data import tokenize
    from selection import ask_llm

    corpus, (tr_tok, tr_mask) = data["corpus"], data["train"]
    texts = [" ".join(corpus.vocab[t] for t in s[:-1]) for s in data["train_s"]]
    tok = lambda text: tokenize(text, corpus.vocab)[:-1]  # drop the final <eos>: "yes" follows "- no"
    scorer_lm = ask_llm.causal_lm(trainer.lm.apply, proxy)
    ask = lambda ts: ask_llm.ask_llm_scores(scorer_lm, ts, tok, corpus.vocab.index("yes"), batch_size=250, max_len=PTB_MAX_LEN)
    ask(texts[:250])  # warm-up: every batch has the same (250, max_len) shape
    askllm, ask_time = _timed_once(lambda: ask(texts))
    ppl_fn = jax.jit(lambda p, t, m: scores.perplexity(trainer.lm.apply, p, t, mask=m))
    jax.block_until_ready(ppl_fn(proxy, tr_tok, tr_mask))
    ppl, ppl_time = _timed_once(lambda: np.asarray(ppl_fn(proxy, tr_tok, tr_mask)))
    emb = jnp.sum(proxy["embed"][tr_tok[:, :-1]] * tr_mask[..., None], 1) / jnp.sum(tr_mask, 1, keepdims=True)
    dens_fn = lambda: density.density_scores(jax.random.PRNGKey(3), emb, n_rows=256, n_concat=2)
    jax.block_until_ready(dens_fn())
    dens, dens_time = _timed_once(lambda: np.maximum(np.asarray(dens_fn()), 1e-6))
    n = len(texts)
    throughput_rows = [
        {"scorer": f"ask-llm P(yes) (transformer, prompts padded to {PTB_MAX_LEN})", "n": n, "seconds": ask_time, "examples/s": n / ask_time},
        {"scorer": "perplexity (transformer, 24 tokens)", "n": n, "seconds": ppl_time, "examples/s": n / ppl_time},
        {"scorer": "density (mean token embedding)", "n": n, "seconds": dens_time, "examples/s": n / dens_time},
    ]
    return dict(texts=texts, tok=tok, askllm=askllm, ppl=ppl, dens=dens, throughput=throughput_rows)


def ptb_curves(trainer, data, sc, fractions, seeds, max_steps):
    """Test perplexity of a fresh LM trained on each selector's subset, per fraction and seed."""
    n = len(data["train_s"])
    askllm, ppl, dens = sc["askllm"], sc["ppl"], sc["dens"]
    selectors = {
        "random": lambda f, s: select.random_subset(jax.random.PRNGKey(s), n, select.budget(n, f)),
        "ask-llm (top P(yes))": lambda f, s: select.top_k(askllm, select.budget(n, f)),
        "density (ips)": lambda f, s: select.ips_sample(jax.random.PRNGKey(100 + s), dens, select.budget(n, f)),
        "perplexity (low)": lambda f, s: select.bottom_k(ppl, select.budget(n, f)),
    }

    def run(w, s):
        p, used = trainer.train_lm(jax.random.PRNGKey(500 + s), w, *data["train"], max_steps)
        return float(trainer.ppl_of(p, *data["test"])), used

    full = {s: run(np.ones(n, np.float32), s) for s in seeds}  # 100 %: the same for every selector
    print(f"  full pool: test ppl {[round(v[0], 1) for v in full.values()]}, steps {[v[1] for v in full.values()]}", flush=True)
    curves, rows = {}, []
    for name, sel in selectors.items():
        curves[name] = {"fraction": [], "mean": [], "std": []}
        row = {"selector": name}
        for f in fractions:
            vals, used = [], []
            for s in seeds:
                if f >= 1:
                    v, u = full[s]
                else:
                    w = np.zeros(n, np.float32)
                    w[sel(f, s)] = 1
                    v, u = run(w, s)
                vals.append(v)
                used.append(u)
            curves[name]["fraction"].append(f)
            curves[name]["mean"].append(float(np.mean(vals)))
            curves[name]["std"].append(float(np.std(vals)))
            curves[name].setdefault("steps", []).append(used)
            row[f"{int(round(100 * f))}%"] = f"{np.mean(vals):.1f}±{np.std(vals):.1f}"
        rows.append(row)
        print(f"  {name}: {row}", flush=True)
    return curves, rows


def ptb_experiment(args):
    """Ask-LLM / DENSITY / perplexity selection of PTB sentences for a Transformer LM."""
    from scipy.stats import spearmanr

    from selection import ask_llm

    data = ptb_data(args.quick)
    trainer = LMTrainer(data["dev"])
    proxy, proxy_steps = ptb_scoring_lm(trainer, data, args.quick)
    sc = ptb_scores(trainer, proxy, data)
    askllm, texts, train_s = sc["askllm"], sc["texts"], data["train_s"]
    corr = {"askllm_vs_ppl_spearman": float(spearmanr(askllm, sc["ppl"]).correlation),
            "askllm_vs_length_spearman": float(spearmanr(askllm, [len(s) for s in train_s]).correlation)}
    fractions = [0.1, 0.3, 0.5, 1.0] if args.quick else [0.1, 0.2, 0.4, 0.6, 1.0]
    seeds = args.seeds[:2] if args.quick else args.seeds
    max_steps = 1500 if args.quick else 3000
    curves, rows = ptb_curves(trainer, data, sc, fractions, seeds, max_steps)
    return {
        "config": {"vocab_size": PTB_VOCAB, "n_sentences": len(train_s), "sentence_len": PTB_SENT_LEN, "lm": "transformer d64 L2 H2",
                   "scoring_lm_steps": proxy_steps, "target_max_steps": max_steps, "batch": 32, "fractions": fractions,
                   "seeds": list(seeds), "target_protocol": "Adam 3e-3, early stopping on 500 valid sentences (eval every 25 steps, "
                   "patience 4); test perplexity on 1000 test sentences"},
        "scoring_lm_valid_ppl": trainer.valid_ppl(proxy),
        "curves": curves, "rows": rows, "throughput": sc["throughput"], "correlations": corr,
        "askllm_stats": {"mean": float(askllm.mean()), "min": float(askllm.min()), "max": float(askllm.max())},
        "example_prompt_tokens": int(len(sc["tok"](ask_llm.make_prompt(texts[0])))),
        "askllm_top_sentences": [texts[i] for i in np.argsort(-askllm)[:3]],
        "askllm_bottom_sentences": [texts[i] for i in np.argsort(askllm)[:3]],
    }


# ----------------------------------------------------------------------------- main


def plot(path, results, ptb=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, v) for k, v in results.items() if k.startswith("digits")]
    ncols = len(panels) + (1 if ptb else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 5), squeeze=False)
    for ax, (title, res) in zip(axes[0], panels, strict=False):  # the last axis may be the PTB panel
        for name, c in res["curves"].items():
            style = dict(lw=2.5, color="k") if name == "random" else dict(lw=1.2)
            ax.errorbar(np.array(c["fraction"]) * 100, c["mean"], yerr=c["std"], label=name, capsize=2, marker="o", ms=3, **style)
        ax.axhline(res["full_data_acc"][0], color="gray", ls="--", label="full data")
        ax.set(xlabel="% of training set kept", ylabel="test accuracy (%)", title=title)
        ax.set_ylim(max(40, ax.get_ylim()[0]), 100)
        ax.legend(fontsize=7, ncol=2)
    if ptb:
        ax = axes[0][-1]
        for name, c in ptb["curves"].items():
            ax.errorbar(np.array(c["fraction"]) * 100, c["mean"], yerr=c["std"], label=name, capsize=2, marker="o")
        ax.set(xlabel="% of PTB sentences kept", ylabel="test perplexity", title="PTB, Transformer LM")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_ptb_only(args, name, out_dir, t_start):
    """``--ptb-only``: the PTB experiment alone, its tables, JSON and plot."""
    ptb = ptb_experiment(args)
    print(format_table(ptb["rows"], ["selector"] + [f"{int(round(100 * f))}%" for f in ptb["config"]["fractions"]]))
    print(format_table(ptb["throughput"], ["scorer", "n", "seconds", "examples/s"]))
    print(ptb["correlations"], ptb["askllm_stats"])
    path = write_result(name, ptb.pop("config"), ptb, time.perf_counter() - t_start, out_dir=out_dir)
    plot(out_dir / f"{name}.png", {}, ptb)
    print(f"wrote {path} and {name}.png ({time.perf_counter() - t_start:.0f}s)")


def digits_data():
    """Standardised sklearn digits: ``x, y, x_test, y_test`` as jax arrays."""
    tr, te = load_digits(seed=0)
    xtr, mean, std = standardize(tr.x)
    xte, _, _ = standardize(te.x, mean, std)
    return tuple(jnp.asarray(a) for a in (xtr, tr.y, xte, te.y))


def digits_experiment(args, x, y, xt, yt, fractions, seeds):
    """Proxies and scores, the selectors, and every target's pruning curves."""
    t0 = time.perf_counter()
    sc, proxies = compute_scores(jax.random.PRNGKey(0), x, y, n_proxies=3, proxy_epochs=10)
    score_time = time.perf_counter() - t0
    print(f"proxies + scores: {score_time:.1f}s (proxy train acc {sc['proxy_train_acc']:.3f})", flush=True)
    t0 = time.perf_counter()
    selectors = make_selectors(sc, np.asarray(y), jax.random.PRNGKey(1))
    selector_setup = time.perf_counter() - t0
    results, tables = {}, {}
    targets = [("digits / MLP 128-128", mlp(10, hidden=HIDDEN), 1e-3, selectors, fractions, seeds)]
    if args.convnet:  # a conv step costs ~30× an MLP step on CPU: fewer selectors, fractions, seeds
        conv_sel = {k: selectors[k] for k in CONVNET_SELECTORS}
        # depth 2 on 8×8 digits (8 → 4 → 2): a third block would instance-normalise a 2×2 map and pool it to 1×1
        targets.append(("digits / ConvNet-2 (width 16)", convnet(10, width=16, depth=2), 3e-3, conv_sel, [0.1, 0.3, 0.5], seeds[:2]))
    for title, model, lr, sels, fracs, sds in targets:
        print(f"{title}:", flush=True)
        res, rows = pruning_curves(model, sels, x, y, xt, yt, fracs, sds, steps=TARGET_STEPS, batch=64, lr=lr)
        results[title] = res
        tables[title] = rows
        cols = ["selector"] + [f"{int(round(100 * f))}%" for f in fracs] + ["time (s)"]
        print(format_table(rows, cols))
        print(f"full data: {res['full_data_acc'][0]:.1f} ± {res['full_data_acc'][1]:.1f}")
    return results, tables, proxies, {"score_time_s": score_time, "selector_setup_s": selector_setup}


def main(argv=None):
    ap = parser("pruning", __doc__)
    ap.add_argument("--name", default=None, help="result name: NAME.json and NAME.png (default pruning[_quick][_ptb])")
    ap.add_argument("--quick", action="store_true", help="fewer fractions/seeds/steps (~2 min)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the target models (--quick: first 2)")
    ap.add_argument("--convnet", action="store_true", help="also train a ConvNet (width 16) target")
    ap.add_argument("--ptb", action="store_true", help="also run the PTB Ask-LLM / DENSITY experiment")
    ap.add_argument("--ptb-only", action="store_true", help="run only the PTB experiment")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out_dir = output_dir(args)
    name = args.name or ("pruning_quick" if args.quick else "pruning") + ("_ptb" if args.ptb_only else "")
    if args.ptb_only:
        return write_ptb_only(args, name, out_dir, t_start)
    seeds = args.seeds[:2] if args.quick else args.seeds
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9] if args.quick else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    x, y, xt, yt = digits_data()
    results, tables, proxies, timing = digits_experiment(args, x, y, xt, yt, fractions, seeds)
    print("scorer throughput (CPU):", flush=True)
    tp = throughput(x, y, proxies, n_examples=8192 if args.quick else 32768, repeats=3)
    ptb = None
    if args.ptb:
        print("PTB:", flush=True)
        ptb = ptb_experiment(args)
        tp += ptb["throughput"]
        print(format_table(ptb["rows"], ["selector"] + [f"{int(round(100 * f))}%" for f in ptb["config"]["fractions"]]))
        print(ptb["correlations"], ptb["askllm_stats"])
    for r in tp:
        r["examples/s"] = float(f"{r['examples/s']:.4g}")
    print(format_table(tp, ["scorer", "n", "seconds", "examples/s"]))

    config = {
        "dataset": "sklearn digits (1438 train / 359 test, standardised)",
        "proxy": "3 × MLP 128-128, Adam 1e-3, 10 epochs, batch 128 (scores = ensemble; dynamics per epoch)",
        "target_steps": TARGET_STEPS, "target_batch": 64, "target_lr": {"mlp": 1e-3, "convnet": 3e-3},
        "fractions": fractions, "seeds": list(seeds),
        "convnet": {"selectors": list(CONVNET_SELECTORS), "fractions": [0.1, 0.3, 0.5], "seeds": list(seeds[:2])} if args.convnet else None,
        "embeddings": "proxy-0 last hidden layer (128-d)",
        **timing,
    }
    out = {"digits": results, "tables": tables, "throughput": tp}
    if ptb:
        out["ptb"] = ptb
    path = write_result(name, config, out, time.perf_counter() - t_start, out_dir=out_dir)
    plot(out_dir / f"{name}.png", results, ptb)
    print(f"wrote {path} and {name}.png ({time.perf_counter() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
