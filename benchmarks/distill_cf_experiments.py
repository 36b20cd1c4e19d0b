"""Distill-CF summaries beyond ∞-AE: transfer, noise robustness, cold users / items (dissertation Ch. 3).

    python -m benchmarks.distill_cf_experiments --experiment transfer   # §3.6.3, Fig. 3.2 / Table 3.3 style
    python -m benchmarks.distill_cf_experiments --experiment noise      # §3.6.4, Fig. 3.3 / 3.4
    python -m benchmarks.distill_cf_experiments --experiment cold       # §3.6.8, Fig. 3.8
    python -m benchmarks.distill_cf_experiments --experiment cold --quick --out /tmp/x

Protocol of ``benchmarks.distill_cf``: MovieLens latest-small, implicit feedback, users with
< 3 interactions dropped, per-user random 80/10/10 split (``--split-seed``). Every model is
fitted on a *support* set of user rows — the full training matrix, ``μ = round(p·n)`` random
real users, or ``μ`` Distill-CF synthetic users (``distill_cf.distill`` with the library's
defaults except ``--steps``; ∞-AE is its inner model) — and queried with real users' rows:
training rows for validation, train + validation rows at test time (both excluded from every
ranking). Seeds (``--seeds``) are Distill-CF keys, random-user draws, model initialisations
and noise draws; tables report mean ± std (population) over them.

* ``transfer``: EASE, Mult-VAE, MF (BPR) and ∞-AE on each support. λ of EASE and ∞-AE chosen
  on validation nDCG@10. Mult-VAE and MF keep the fixed settings of ``benchmarks.recsys_panel``
  (Mult-VAE I-600-200-600-I, dropout 0.5, β ≤ 0.2, batch 500, Adam 1e-3, 200 updates as on the
  full data there; MF dim 64, Adam 0.05, l2 1e-3, batch 4096, 1000 BPR updates ≈ 50 epochs
  there). MF is a user-id model, so real users are *folded in*: item factors V and biases b
  come from BPR on the support (a summary's soft entries are interaction weights) and a query
  row q scores ``q V (VᵀV + ρ·tr(VᵀV)/d·I)⁻¹ Vᵀ + b`` (ρ on validation), the same for every
  support.
* ``noise``: false positives injected into the training matrix
  (:func:`distill.data.interactions.add_false_positives`: ``round(x·I)`` items per user among
  the items the user never interacted with; the dissertation flips ``x %`` of the items per
  user, which at these densities is almost only 0 → 1), then ∞-AE and EASE on the full noisy
  matrix, on random users of it and on Distill-CF summaries distilled from it; tested on the
  clean test items. The drop is relative to the same model on the clean full data.
* ``cold``: users binned by training activity and items by training popularity into
  ``--bins`` equal-sized quantile bins (ties by id), and items also into bins of equal training
  interaction mass (``item-mass``: most of MovieLens' items are so rare that the equal-sized
  item bins below the top one get almost no hits); test HR@100 / nDCG@10 of ∞-AE and EASE per
  bin (a user bin keeps those users' test items, an item bin keeps every user's test items in
  that bin) for full data, random users and Distill-CF.

``--cache DIR`` stores each Distill-CF summary (``.npy``, keyed by budget, seed, steps, noise)
so the three experiments share them. Writes ``distill_cf_<experiment>_ml-latest-small[_quick]``
``.json`` and ``.png`` into the output folder.
"""

from __future__ import annotations

import pathlib
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, write_result
from distill import data as D
from distill import distill_cf as dcf
from distill import metrics
from distill.data.interactions import add_false_positives
from models import ease, infinite_ae, mf, mvae

#: EASE's λ grid: the library grid plus small values (a soft summary's Gram matrix is small).
EASE_LAMS = (1e-3, 1e-2, 0.1, 1.0) + ease.DEFAULT_LAMS
#: MF fold-in ridge ρ (relative to tr(VᵀV)/d), chosen on validation.
FOLD_IN = (1e-3, 1e-2, 0.1, 1.0)
MVAE = {"hidden": (600,), "latent": 200, "dropout": 0.5, "beta_cap": 0.2, "batch": 500, "lr": 1e-3,
        "updates": 200}
MF = {"dim": 64, "lr": 0.05, "l2": 1e-3, "batch": 4096, "updates": 1000}
METRICS = ("HR@10", "nDCG@10")
EXPERIMENTS = ("transfer", "noise", "cold")


class Problem(NamedTuple):
    """One split: float32 ``(n, I)`` train / val / test rows and the test queries ``train + val``."""

    train: jax.Array
    val: jax.Array
    test: jax.Array
    context: jax.Array


def problem(train, val, test) -> Problem:
    """A :class:`Problem` from numpy matrices."""
    t, v, s = (jnp.asarray(a, jnp.float32) for a in (train, val, test))
    return Problem(t, v, s, t + v)


# ----------------------------------------------------------------------------- supports


def budget_users(n_users: int, pct: float) -> int:
    """``μ = max(1, round(pct/100 · n_users))``."""
    return max(1, int(round(pct / 100 * n_users)))


def random_users(train: np.ndarray, mu: int, seed: int) -> np.ndarray:
    """The training rows of ``mu`` users drawn without replacement (``default_rng(seed)``)."""
    return np.asarray(train)[np.random.default_rng(seed).choice(train.shape[0], mu, replace=False)]


def distilled(train, val, mu: int, seed: int, steps: int, cache, tag: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Distill-CF with key ``seed`` (library defaults, ``steps`` outer steps), cached under ``cache``.

    Returns:
      ``(summary, binary, info)``: the validated Gumbel summary ``(μ, I)`` (what ∞-AE is
      fitted on), the discrete support set ``distill_cf.sample_binary`` draws from Γ
      (§3.4.3, the ``binary`` array of ``distill_cf.export_summary``) and run facts.
    """
    path = None if cache is None else pathlib.Path(cache) / f"dcf_{tag}_mu{mu}_seed{seed}_steps{steps}.npz"
    if path is not None and path.exists():
        z = np.load(path)
        info = {k: float(z[k]) for k in ("val_nDCG@10", "lam", "time_s")}
        return z["data"], z["binary"], {**info, "cached": True}
    t = time.perf_counter()
    settings = dcf.Settings(n_syn_users=mu, steps=steps, eval_every=max(1, min(25, steps)))
    res = dcf.distill(jax.random.key(seed), dcf.Data(np.asarray(train), np.asarray(val)), settings)
    binary = dcf.sample_binary(jax.random.key(dcf.EXPORT_KEY_SEED), res.params, n_samples=settings.n_samples)
    out, binary = np.asarray(res.data, np.float32), np.asarray(binary, np.float32)
    info = {"val_nDCG@10": float(res.val_value), "lam": float(res.lam), "time_s": time.perf_counter() - t}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, data=out, binary=binary, **info)
    return out, binary, {**info, "cached": False}


# ----------------------------------------------------------------------------- models on a support
# Each fitter: (key, support, problem, quick) -> (chosen setting, (m, I) scores of problem.context).


def _best(values: dict) -> float:
    ok = {k: v for k, v in values.items() if np.isfinite(v)}
    if not ok:
        raise ValueError(f"lams: every value failed on validation: {values}")
    return max(ok, key=ok.get)


def _val_ndcg(scores, p: Problem) -> float:
    return float(metrics.evaluate(scores, p.val, p.train, ks=(10,), metrics=("ndcg",))["nDCG@10"])


def fit_inf_ae(key, support, p: Problem, quick=False):
    """∞-AE on ``support``, λ by validation nDCG@10 (``distill_cf.select_lambda``)."""
    lam = dcf.select_lambda(jnp.asarray(support), p.train, p.val, metric="nDCG@10").best_lam
    path = infinite_ae.spectral_path(jnp.asarray(support, jnp.float32), p.context)
    return f"lam={lam:g}", infinite_ae.spectral_scores(path, lam)


def fit_ease(key, support, p: Problem, quick=False):
    """EASE on ``support``, λ over :data:`EASE_LAMS` by validation nDCG@10 (failed solves skipped)."""
    s = jnp.asarray(support, jnp.float32)
    values = {}
    for lam in EASE_LAMS:
        try:
            values[lam] = _val_ndcg(ease.fit_predict(s, p.train, lam=lam), p)
        except ValueError:
            values[lam] = float("nan")
    lam = _best(values)
    return f"lam={lam:g}", ease.fit_predict(s, p.context, lam=lam)


def fit_mvae(key, support, p: Problem, quick=False):
    """Mult-VAE on ``support`` with the fixed settings of :data:`MVAE` (a fixed number of updates)."""
    n = support.shape[0]
    batch = min(MVAE["batch"], n)
    updates = 20 if quick else MVAE["updates"]
    epochs = max(1, -(-updates // -(-n // batch)))
    f = mvae.fit(key, jnp.asarray(support, jnp.float32), hidden=MVAE["hidden"], latent=MVAE["latent"],
                 dropout=MVAE["dropout"], beta_cap=MVAE["beta_cap"], lr=MVAE["lr"], batch_size=batch,
                 epochs=epochs, total_anneal_steps=mvae.anneal_steps(n, epochs, batch_size=batch))
    return f"epochs={epochs}", mvae.scores(f.params, p.context)


def fold_in(item_emb, item_bias, queries, rho):
    """MF scores of unseen users: ``u = q V (VᵀV + ρ·tr(VᵀV)/d·I)⁻¹``, ``r̂ = u Vᵀ + b``.

    Args:
      item_emb: ``(I, d)`` item factors V.  item_bias: ``(I,)`` b.
      queries: ``(m, I)`` user rows q.  rho: relative ridge ρ > 0.

    Returns:
      ``(m, I)`` scores.
    """
    g = item_emb.T @ item_emb
    d = g.shape[0]
    a = g + rho * jnp.trace(g) / d * jnp.eye(d, dtype=g.dtype)
    u = jnp.linalg.solve(a, (queries @ item_emb).T).T
    return u @ item_emb.T + item_bias[None, :]


def fit_mf(key, support, p: Problem, quick=False):
    """MF (BPR) item factors on ``support`` (entries as weights, :data:`MF`), users folded in (ρ on validation)."""
    s = np.asarray(support, np.float32)
    u, i = np.nonzero(s)
    batch = min(MF["batch"], u.size)
    updates = 100 if quick else MF["updates"]
    epochs = max(1, int(round(updates / -(-u.size // batch))))
    f = mf.fit(key, u.astype(np.int32), i.astype(np.int32), s.shape[0], s.shape[1], dim=MF["dim"],
               epochs=epochs, lr=MF["lr"], l2=MF["l2"], batch_size=batch, n_negatives=1,
               weights=jnp.asarray(s[u, i]))
    v, b = f.params.item_emb, f.params.item_bias
    rho = _best({r: _val_ndcg(fold_in(v, b, p.train, r), p) for r in FOLD_IN})
    return f"epochs={epochs},rho={rho:g}", fold_in(v, b, p.context, rho)


#: (model, support) pairs not fitted: BPR needs discrete positives, and the soft summary's
#: μ·I near-uniform weights (all entries in ~[0.01, 0.07]) gave MF nDCG@10 ≈ 0.6 in a --quick run.
SKIP = {("MF (BPR)", "Distill-CF")}
FITTERS: dict[str, Callable] = {"EASE": fit_ease, "Mult-VAE": fit_mvae, "MF (BPR)": fit_mf, "inf-AE": fit_inf_ae}


def eval_test(scores, p: Problem, test=None) -> dict[str, float]:
    """HR@10, HR@100, nDCG@10 (×100) of ``scores`` on ``test`` (default ``p.test``), train + val excluded."""
    m = metrics.evaluate(scores, p.test if test is None else test, p.context, ks=(10, 100), metrics=("hr", "ndcg"))
    return {k: float(m[k]) for k in ("HR@10", "HR@100", "nDCG@10")}


# ----------------------------------------------------------------------------- tables


def summarise(records: list[dict], keys: tuple[str, ...], cols=("HR@10", "HR@100", "nDCG@10")) -> list[dict]:
    """Group per-seed records by ``keys``; mean and population std of ``cols``, first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    rows = []
    for g, recs in groups.items():
        row = dict(zip(keys, g, strict=True))
        for c in cols:
            vals = [r[c] for r in recs if c in r]
            if vals:
                row[c], row[c + "_std"] = float(np.mean(vals)), float(np.std(vals))
        row["n_seeds"] = len(recs)
        row["chosen"] = [r.get("chosen") for r in recs]
        rows.append(row)
    return rows


def pm(rows: list[dict], cols) -> list[dict]:
    """Rows with ``mean±std`` strings, for printing."""
    return [{**r, **{c: f"{r[c]:.2f}±{r[c + '_std']:.2f}" for c in cols if c in r}} for r in rows]


def user_bins(train: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Users sorted by training activity (ascending, ties by id) cut into ``n_bins`` equal-sized bins."""
    order = np.argsort(np.asarray(train).sum(1), kind="stable")
    return np.array_split(order, n_bins)


def item_bins(train: np.ndarray, n_bins: int, by: str = "count") -> list[np.ndarray]:
    """Items sorted by training popularity (ascending, ties by id) cut into ``n_bins`` bins.

    ``by="count"``: equal numbers of items (Fig. 3.8's equisized bins). ``by="mass"``: equal
    shares of the training interactions — bin ``b`` holds the items whose cumulative
    popularity (in sorted order, inclusive) lies in ``(b/B, (b+1)/B]`` of the total.
    """
    pop = np.asarray(train).sum(0)
    order = np.argsort(pop, kind="stable")
    if by == "count":
        return np.array_split(order, n_bins)
    share = np.cumsum(pop[order]) / max(pop.sum(), 1)
    which = np.minimum(np.ceil(share * n_bins - 1e-9).astype(int) - 1, n_bins - 1).clip(0)
    return [order[which == b] for b in range(n_bins)]


def binned_metrics(scores, p: Problem, ubins, ibins: dict) -> list[dict]:
    """Test metrics restricted to each user bin (their test rows) and each item bin (test columns).

    ``ibins`` maps a kind name (``"item"``, ``"item-mass"``) to its item bins; empty bins are skipped.
    """
    test = np.asarray(p.test)
    out = []
    for kind, bins in (("user", ubins), *ibins.items()):
        for b, idx in enumerate(bins):
            mask = np.zeros_like(test)
            if kind == "user":
                mask[idx] = test[idx]
            else:
                mask[:, idx] = test[:, idx]
            if mask.sum() == 0:
                continue
            out.append({"bin_kind": kind, "bin": b, **eval_test(scores, p, jnp.asarray(mask))})
    return out


# ----------------------------------------------------------------------------- experiments


def _supports(args, train, val, pct, seed, tag):
    """``{data name: (support, distillation info)}`` for one budget and seed."""
    mu = budget_users(train.shape[0], pct)
    summary, binary, info = distilled(train, val, mu, seed, args.steps, args.cache, tag)
    return {"random users": (random_users(train, mu, seed), {}), "Distill-CF": (summary, info),
            "Distill-CF binary": (binary, info)}


def _fit_rows(key, support, p, models, quick, base: dict) -> list[dict]:
    rows = []
    for name in models:
        if (name, base["data"]) in SKIP:
            continue
        t = time.perf_counter()
        chosen, scores = FITTERS[name](key, support, p, quick)
        rows.append({**base, "model": name, "chosen": chosen, **eval_test(scores, p),
                     "time_s": time.perf_counter() - t})
        print(f"  {base} {name}: {chosen} nDCG@10 {rows[-1]['nDCG@10']:.2f} ({rows[-1]['time_s']:.0f} s)", flush=True)
    return rows


def run_transfer(args, split) -> tuple[list[dict], list[dict]]:
    """Every model of ``args.models`` on full data and, per budget, on random users and Distill-CF."""
    p = problem(split.train, split.val, split.test)
    records = []
    for seed in args.seeds:
        key = jax.random.key(seed)
        if seed in args.seeds[: args.full_fits]:
            records += _fit_rows(key, split.train, p, args.models, args.quick,
                                 {"budget_%": 100.0, "data": "full data", "seed": seed})
        for pct in args.budgets:
            for data, (support, info) in _supports(args, split.train, split.val, pct, seed, "clean").items():
                rows = _fit_rows(key, support, p, args.models, args.quick,
                                 {"budget_%": pct, "data": data, "seed": seed})
                records += [{**r, "distill": info} for r in rows]
    table = summarise(records, ("budget_%", "data", "model"))
    full = {r["model"]: r["nDCG@10"] for r in table if r["data"] == "full data"}
    for r in table:
        r["nDCG@10_%full"] = 100.0 * r["nDCG@10"] / full[r["model"]]
    return table, records


def run_noise(args, split) -> tuple[list[dict], list[dict]]:
    """∞-AE and EASE on full noisy data, random users of it and Distill-CF summaries of it, per noise level."""
    held_out = np.clip(split.val + split.test, 0, 1)
    records = []
    for seed in args.seeds:
        key = jax.random.key(seed)
        for level in args.noise:
            noisy = add_false_positives(split.train, level / 100, seed=seed, exclude=held_out)
            pn = problem(noisy, split.val, split.test)  # clean val / test, noisy training rows
            base = {"noise_%": level, "seed": seed, "noise_per_user": int(round(level / 100 * noisy.shape[1]))}
            supports = {"full data": (noisy, {})}
            supports.update(_supports(args, noisy, split.val, args.budgets[0], seed,
                                      "clean" if level == 0 else f"noise{level:g}"))
            for data, (support, info) in supports.items():
                rows = _fit_rows(key, support, pn, args.models, args.quick, {**base, "data": data})
                records += [{**r, "distill": info} for r in rows]
    table = summarise(records, ("noise_%", "data", "model"))
    clean = {r["model"]: r for r in table if r["noise_%"] == 0 and r["data"] == "full data"}
    for r in table:
        if r["model"] in clean:
            r["HR@10_drop_%"] = 100.0 * (1 - r["HR@10"] / clean[r["model"]]["HR@10"])
    return table, records


def run_cold(args, split) -> tuple[list[dict], list[dict]]:
    """Test metrics per user-activity and item-popularity bin for full data, random users and Distill-CF."""
    p = problem(split.train, split.val, split.test)
    ubins = user_bins(split.train, args.bins)
    ibins = {"item": item_bins(split.train, args.bins), "item-mass": item_bins(split.train, args.bins, "mass")}
    records = []
    for seed in args.seeds:
        key = jax.random.key(seed)
        supports = {"full data": (split.train, {})}
        supports.update(_supports(args, split.train, split.val, args.budgets[0], seed, "clean"))
        for data, (support, _) in supports.items():
            for name in args.models:
                chosen, scores = FITTERS[name](key, support, p, args.quick)
                for r in [{"bin_kind": "all", "bin": -1, **eval_test(scores, p)},
                          *binned_metrics(scores, p, ubins, ibins)]:
                    records.append({**r, "data": data, "model": name, "seed": seed, "chosen": chosen})
            print(f"  seed {seed} {data}: done", flush=True)
    table = summarise(records, ("bin_kind", "bin", "data", "model"))
    pop = np.asarray(split.train).sum(0)
    sizes = {"user": [(len(b), float(np.asarray(split.train).sum(1)[b].mean())) for b in ubins],
             **{k: [(len(b), float(pop[b].mean())) for b in v] for k, v in ibins.items()}}
    for r in table:
        if r["bin_kind"] != "all":
            r["bin_size"], r["mean_train_count"] = sizes[r["bin_kind"]][r["bin"]]
    return table, records


RUNNERS = {"transfer": run_transfer, "noise": run_noise, "cold": run_cold}
KEYS = {"transfer": ["budget_%", "data", "model"], "noise": ["noise_%", "data", "model"],
        "cold": ["bin_kind", "bin", "data", "model"]}
DEFAULT_MODELS = {"transfer": list(FITTERS), "noise": ["inf-AE", "EASE"], "cold": ["inf-AE", "EASE"]}


def _parse(argv):
    p = parser("distill_cf_experiments", __doc__)
    p.add_argument("--experiment", choices=EXPERIMENTS, required=True, help="which experiment to run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="keys / draws (unset: 0 1 2; 0 with --quick)")
    p.add_argument("--split-seed", type=int, default=0, help="the split of benchmarks.distill_cf")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="%% of users (unset: transfer 5 10, noise/cold 5; 5 with --quick); noise/cold use the first")
    p.add_argument("--steps", type=int, default=None, help="Distill-CF outer steps (unset: 50; 10 with --quick)")
    p.add_argument("--noise", type=float, nargs="+", default=None,
                   help="noise levels, %% of the items per user (unset: 0 1 5; 0 1 with --quick)")
    p.add_argument("--bins", type=int, default=5, help="cold: equal-sized quantile bins of users and of items")
    p.add_argument("--models", nargs="+", default=None, choices=list(FITTERS),
                   help="models (unset: transfer all four, noise / cold inf-AE and EASE)")
    p.add_argument("--full-fits", type=int, default=None,
                   help="transfer: seeds with full-data fits (unset: all; Mult-VAE on the full data is the cost)")
    p.add_argument("--cache", default=None, help="folder caching Distill-CF summaries across runs")
    p.add_argument("--quick", action="store_true", help="1 seed, 10 steps, short Mult-VAE / MF training")
    args = p.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.steps = args.steps or (10 if args.quick else 50)
    args.budgets = args.budgets or ([5.0] if args.quick or args.experiment != "transfer" else [5.0, 10.0])
    args.noise = args.noise if args.noise is not None else ([0.0, 1.0] if args.quick else [0.0, 1.0, 5.0])
    args.models = args.models or DEFAULT_MODELS[args.experiment]
    args.full_fits = len(args.seeds) if args.full_fits is None else args.full_fits
    return args


def main(argv=None):
    args = _parse(argv)
    out = output_dir(args)
    t0 = time.perf_counter()
    split = D.random_split(D.to_implicit(D.load_movielens_small()), seed=args.split_seed, min_interactions=3)
    table, records = RUNNERS[args.experiment](args, split)
    cols = KEYS[args.experiment] + ["HR@10", "HR@100", "nDCG@10"]
    print(format_table(pm(table, ("HR@10", "HR@100", "nDCG@10")), cols + ["n_seeds"]))
    wall = time.perf_counter() - t0
    config = {
        "dataset": "ml-latest-small", "experiment": args.experiment, "split_seed": args.split_seed,
        "n_users": split.n_users, "n_items": split.n_items, "seeds": args.seeds, "budgets_pct_users": args.budgets,
        "distill_cf": {**dcf.settings_json(dcf.Settings(steps=args.steps, eval_every=min(25, args.steps))),
                       "n_syn_users": "round(budget · n_users)"},
        "models": args.models, "ease_lams": list(EASE_LAMS), "inf_ae_lams": list(infinite_ae.DEFAULT_LAMS),
        "mvae": MVAE, "mf": {**MF, "fold_in_rho": list(FOLD_IN)}, "full_fits": args.full_fits,
        "noise_pct_items_per_user": args.noise if args.experiment == "noise" else None,
        "bins": args.bins if args.experiment == "cold" else None,
        "selection": "validation nDCG@10, training rows as queries",
        "test": "queries = train + val rows, both excluded from ranking", "std": "population (ddof=0) over seeds",
        "quick": args.quick,
    }
    name = f"distill_cf_{args.experiment}_ml-latest-small" + ("_quick" if args.quick else "")
    path = write_result(name, config, {"table": table, "per_seed": records}, wall, out_dir=out)
    PLOTS[args.experiment](table, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.1f} s)")
    return table


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_transfer(table, path):
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in table))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for color, data in enumerate(("random users", "Distill-CF", "Distill-CF binary")):
            pts = sorted((r["budget_%"], r["nDCG@10"], r["nDCG@10_std"]) for r in table
                         if r["model"] == m and r["data"] == data)
            if pts:  # one colour per support in every panel, also where a support is missing
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=data, color=f"C{color}")
        full = [r["nDCG@10"] for r in table if r["model"] == m and r["data"] == "full data"]
        if full:
            ax.axhline(full[0], color="k", ls="--", label="full data")
        ax.set(xscale="log", xlabel="budget (% of users)", ylabel="test nDCG@10", title=m)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_noise(table, path):
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in table))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for data in dict.fromkeys(r["data"] for r in table):
            pts = [(r["noise_%"], r["HR@10"], r["HR@10_std"]) for r in table if r["model"] == m and r["data"] == data]
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=data)
        ax.set(xlabel="noise (% of items per user)", ylabel="test HR@10", title=m)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cold(table, path):
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in table))
    datas = list(dict.fromkeys(r["data"] for r in table))
    kinds = ("user", "item", "item-mass")
    fig, axes = plt.subplots(len(models), 3, figsize=(13, 3.2 * len(models)), squeeze=False)
    for row, m in zip(axes, models, strict=True):
        for ax, kind in zip(row, kinds, strict=True):
            for j, data in enumerate(datas):
                pts = [(r["bin"], r["HR@100"], r["HR@100_std"]) for r in table
                       if r["model"] == m and r["data"] == data and r["bin_kind"] == kind]
                x, y, e = zip(*pts, strict=True)
                w = 0.8 / len(datas)
                ax.bar(np.array(x) + w * (j - (len(datas) - 1) / 2), y, w, yerr=e, capsize=2, label=data)
            ax.set(xlabel=f"{kind} bin (0 = coldest)", ylabel="test HR@100", title=f"{m}: {kind}s")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {"transfer": plot_transfer, "noise": plot_noise, "cold": plot_cold}


if __name__ == "__main__":
    main()
