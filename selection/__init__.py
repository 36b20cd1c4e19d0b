"""Data selection: per-example scorers, samplers and coresets (see DESIGN.md).

* :mod:`~selection.scores` — loss, EL2N, GraNd, margin, entropy, output gradients,
  perplexity (vmapped one-example scorers, sharded with ``mesh=``), forgetting events,
  data maps, SSL prototype distance.
* :mod:`~selection.training_dynamics` — recording per-example dynamics in an optax loop.
* :mod:`~selection.select` — top/bottom-k, random, inverse propensity sampling,
  stratified and coverage-centric (CCS) selection.
* :mod:`~selection.density` — DENSITY: p-stable LSH sketch of the embedding KDE + IPS.
* :mod:`~selection.ask_llm` — ASK-LLM: P("yes") of any next-token LM under the prompt.
* :mod:`~selection.coresets` — k-means, facility location (naive/lazy/stochastic greedy),
  CRAIG, k-center greedy.
* :mod:`~selection.semdedup` — SemDeDup.   :mod:`~selection.s2l` — SmallToLarge.
* :mod:`~selection.valuation` — exact leave-one-out (ridge / KRR rank-one downdates,
  warm-started Newton refits).  :mod:`~selection.influence` — influence functions with
  CG / LiSSA inverse-HVPs.  :mod:`~selection.shapley` — exact, truncated Monte-Carlo and
  KNN Data Shapley.
* :mod:`~selection.crest` — CREST training-time mini-batch coresets (and the shared
  coreset training loop).  :mod:`~selection.ssm` — SSM zeroth-order gradient sketches.
  :mod:`~selection.sas` — SAS for contrastive learning.  :mod:`~selection.clipcov` — ClipCov.
* :mod:`~selection.cf_sampling` — the eight heuristic CF samplers (interaction, user,
  graph).  :mod:`~selection.svp_cf` — the eight SVP-CF(-PROP) samplers.
  :mod:`~selection.psi` — Kendall's τ, Ψ and the CF model panel.
  :mod:`~selection.data_genie` — DATA-GENIE (dataset embeddings, Φ, P@1).

Every package-level name means one thing: the submodules are modules (``selection.semdedup``
is the module; its function is ``selection.semdedup.semdedup``), and the functions and classes
re-exported here have names no submodule uses.
"""

from selection import (
    ask_llm,
    cf_sampling,
    clipcov,
    coresets,
    crest,
    data_genie,
    density,
    influence,
    psi,
    s2l,
    sas,
    scores,
    select,
    semdedup,
    shapley,
    ssm,
    svp_cf,
    training_dynamics,
    valuation,
)
from selection.clipcov import ClipCov
from selection.ask_llm import PROMPT_TEMPLATE, ask_llm_scores, causal_lm, make_prompt, p_yes
from selection.coresets import (
    Coreset,
    FacilityLocation,
    KMeans,
    craig,
    facility_location,
    facility_location_value,
    k_center_greedy,
    kmeans,
    proportional_budget,
)
from selection.crest import CoresetTraining, MinibatchCoresets, crest_train, minibatch_coresets, train_on_coresets
from selection.influence import ihvp_cg, ihvp_lissa, influence_loss, influence_params
from selection.sas import SAS, expected_augmentation_distance
from selection.density import density_sample, density_scores, exact_kernel_sum
from selection.scores import DataMap, data_map, forgetting_events, prototype_distance, score_examples
from selection.select import (
    bottom_k,
    budget,
    coverage_centric,
    ips_sample,
    random_subset,
    stratified_sample,
    to_mask,
    top_k,
)
from selection.semdedup import SemDeDup
from selection.shapley import TMCShapley, exact_shapley, knn_shapley, knn_utility, tmc_shapley
from selection.ssm import ssm_train, zeroth_order_features
from selection.training_dynamics import Dynamics, DynamicsRecorder, record_examples, train_with_dynamics
from selection.valuation import loo_krr, loo_newton, loo_ridge

__all__ = [
    "scores", "select", "density", "ask_llm", "coresets", "training_dynamics",
    "score_examples", "forgetting_events", "data_map", "DataMap", "prototype_distance",
    "top_k", "bottom_k", "random_subset", "ips_sample", "coverage_centric", "stratified_sample",
    "to_mask", "budget",
    "density_scores", "density_sample", "exact_kernel_sum",
    "PROMPT_TEMPLATE", "make_prompt", "p_yes", "causal_lm", "ask_llm_scores",
    "kmeans", "KMeans", "facility_location", "facility_location_value", "FacilityLocation",
    "craig", "Coreset", "k_center_greedy",
    "semdedup", "SemDeDup", "s2l", "sas", "clipcov",
    "Dynamics", "DynamicsRecorder", "record_examples", "train_with_dynamics",
    "valuation", "influence", "shapley", "crest", "ssm", "proportional_budget",
    "cf_sampling", "svp_cf", "psi", "data_genie",
    "loo_ridge", "loo_krr", "loo_newton",
    "ihvp_cg", "ihvp_lissa", "influence_params", "influence_loss",
    "exact_shapley", "tmc_shapley", "TMCShapley", "knn_shapley", "knn_utility",
    "minibatch_coresets", "MinibatchCoresets", "train_on_coresets", "CoresetTraining", "crest_train",
    "ssm_train", "zeroth_order_features",
    "SAS", "expected_augmentation_distance", "ClipCov",
]
