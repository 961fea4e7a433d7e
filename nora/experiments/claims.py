"""The papers' claims, written once: what each says, the paper's figure, and the criterion that decides it here.

One :class:`Claim` per claim of the NoRA paper (abstract, every numbered table and figure, the
appendices' theory) and of the LoRAN summary. Each names the chapter and section that show it
(the ledger links there), and a criterion from :mod:`nora.experiments.verdicts` that reads the
chapter's ``results/<profile>/<chapter>.json``. The results page (:mod:`nora.experiments.ledger`)
and every chapter's "What we found" evaluate this one list, so they cannot disagree.

Key naming follows the chapters: ``<task>_acc_<method>`` with ``..._std`` over ``seeds``; the
book's ``easy`` / ``hard`` tasks stand in for CIFAR-10 / CIFAR-100 (each chapter says which).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nora.experiments.verdicts import (AllOf, Best, Criterion, Exceeds, Flag, Gain, Gate, Majority, NotTestable, Outcome,
                                       Ratio, Regime, Within, ZeroMean)

__all__ = ["CLAIMS", "Claim", "by_chapter", "evaluate", "section_id"]


def section_id(title: str) -> str:
    """The HTML id Sphinx gives a section titled ``title`` (Markdown code and math marks dropped)."""
    from docutils.nodes import make_id

    return make_id(re.sub(r"[`$*]", "", title))


@dataclass(frozen=True)
class Claim:
    """One claim: where it comes from, what it says, the paper's figure, where the book shows it, and its criterion."""

    id: str
    source: str  # "NoRA, Table 1", "NoRA, App. A.4", "LoRAN", ...
    text: str
    paper: str
    chapter: str  # the notebook's name, e.g. "04_vit_transfer"
    section: str  # the title of the section that shows it (the ledger links to it)
    test: Criterion
    criterion: str = ""  # in words, when the criterion's own words are not enough
    unrecorded: str = ""  # why some of its keys are not recorded (yet), and which run would record them

    @property
    def anchor(self) -> str:
        return section_id(self.section)

    @property
    def words(self) -> str:
        return self.criterion or self.test.words()

    def evaluate(self, values: Mapping[str, Any]) -> Outcome:
        out = self.test.evaluate(values)
        if out.verdict == "not testable here" and self.unrecorded:
            return Outcome(out.verdict, out.ours, f"{out.reason} ({self.unrecorded})")
        return out


# --------------------------------------------------------------------------------- the registry

_T1 = {"full": "full", "vpt": "VPT", "adapter": "Adapter", "lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA",
       "nora": "NoRA", "noraplus": "NoRA++", "lora_all": "LoRA (all layers)"}
_T1_OTHERS = ("full", "vpt", "adapter", "lora", "qlora", "dora", "nora")
_RUNS, _MATCHED = "Fine-tuning runs", "Matched budget: NoRA++ against LoRA and DoRA"
_GATED = "; inconclusive on a task whose regime gates fail"  # what Regime adds to a chapter-04 comparison


def _regime(task: str) -> tuple[Gate, ...]:
    """Chapter 04's regime gates of one task ("easy" or "hard"), on its recorded means, named as the chapter names them."""
    gates = (Gate("full fine-tuning − from scratch", f"{task}_acc_full", f"{task}_acc_scratch", lo=10),
             Gate("full fine-tuning − head-only probe", f"{task}_acc_full", f"{task}_acc_probe", hi=10),
             Gate("full fine-tuning", f"{task}_acc_full", lo=70, hi=95),
             Gate("ceiling − full fine-tuning", f"{task}_ceiling", f"{task}_acc_full", hi=5))
    return gates + ((Gate("full fine-tuning − LoRA", "easy_acc_full", "easy_acc_lora", hi=3),) if task == "easy" else ())


def _gated(task: str, test: Criterion) -> Regime:
    return Regime(test, _regime(task), f"the {task} task")


def _ex(task: str, a: str, b: str, tagged: bool = True) -> Regime:
    return _gated(task, Exceeds(f"{task}_acc_{a}", f"{task}_acc_{b}", (_T1[a], _T1[b]), tag=f" ({task})" if tagged else ""))


_SETS = ("alpaca", "mathinstruct", "openorca", "sharegpt_hyper", "ultrachat")

CLAIMS: tuple[Claim, ...] = (
    # ---- NoRA: abstract and Table 1 (chapter 04)
    Claim("nora-vs-full-cifar10", "NoRA, abstract and Table 1",
          "NoRA matches or exceeds full fine-tuning on CIFAR-10 while training 0.4 % of the parameters.",
          "90.88 vs 90.71 (+0.17)", "04_vit_transfer", _RUNS, _ex("easy", "nora", "full", False),
          "NoRA − full > 2 s.e. on the easy task (CIFAR-10's stand-in)" + _GATED),
    Claim("nora-vs-full-cifar100", "NoRA, abstract and Table 1",
          "NoRA matches or exceeds full fine-tuning on CIFAR-100.",
          "77.46 vs 77.19 (+0.27)", "04_vit_transfer", _RUNS, _ex("hard", "nora", "full", False),
          "NoRA − full > 2 s.e. on the hard task (CIFAR-100's stand-in)" + _GATED),
    Claim("nora-parameter-share", "NoRA, abstract and Table 1",
          "NoRA updates only 0.4 % of the parameters (0.02M, the head included).",
          "0.02M (0.4 %)", "04_vit_transfer", "Methods and their configurations",
          Within("percent_nora", "NoRA's trainable share", hi=0.4, unit=" %"),
          "NoRA's trainable share (head included) ≤ 0.4 %"),
    Claim("lora-dora-vs-full", "NoRA, Table 1",
          "LoRA and DoRA also slightly surpass full fine-tuning.",
          "LoRA 91.05 / 77.68, DoRA 91.13 / 77.71 vs full 90.71 / 77.19", "04_vit_transfer", _RUNS,
          AllOf([_ex("easy", "lora", "full"), _ex("easy", "dora", "full"), _ex("hard", "lora", "full"),
                 _ex("hard", "dora", "full")]),
          "LoRA − full and DoRA − full > 2 s.e. on both tasks (all four)" + _GATED),
    Claim("lora-dora-parameters", "NoRA, Table 1",
          "LoRA and DoRA need more than 15 times NoRA's trainable parameters.",
          "0.33M / 0.34M vs 0.02M", "04_vit_transfer", "Methods and their configurations",
          AllOf([Ratio("params_lora", "params_nora", "LoRA / NoRA", lo=15, digits=1),
                 Ratio("params_dora", "params_nora", "DoRA / NoRA", lo=15, digits=1)]),
          "LoRA's and DoRA's trainable parameters (head included) ≥ 15 × NoRA's"),
    Claim("weaker-baselines", "NoRA, Table 1",
          "Adapter, QLoRA and VPT lag behind LoRA.",
          "CIFAR-100: Adapter 75.88, QLoRA 77.01, VPT 75.43 vs LoRA 77.68", "04_vit_transfer", _RUNS,
          AllOf([_ex("hard", "lora", m) for m in ("adapter", "qlora", "vpt")]),
          "LoRA − each of Adapter, QLoRA, VPT > 2 s.e. (hard task)" + _GATED),
    Claim("noraplus-best", "NoRA, Table 1",
          "NoRA++ gives the best accuracy of all methods on both datasets.",
          "91.24 (CIFAR-10), 77.76 (CIFAR-100)", "04_vit_transfer", _RUNS,
          AllOf([_gated(t, Best(f"{t}_acc_", "noraplus", _T1_OTHERS, _T1, tag=f" ({t})")) for t in ("easy", "hard")]),
          "NoRA++ − the best other method of Table 1 > 2 s.e., on both tasks" + _GATED),
    Claim("noraplus-matched-budget", "NoRA, abstract",
          "NoRA++ outperforms LoRA and DoRA under matched training budgets.",
          "+0.19 over LoRA, +0.11 over DoRA (CIFAR-10)", "04_vit_transfer", _MATCHED,
          AllOf([_ex("easy", "noraplus", "lora_all"), _ex("hard", "noraplus", "lora_all"),
                 _ex("easy", "noraplus", "dora"), _ex("hard", "noraplus", "dora")]),
          "NoRA++ − LoRA on all layers (the matched budget) and NoRA++ − DoRA > 2 s.e., both tasks" + _GATED),
    # ---- Figure 2 and Figure 5 (chapter 05)
    Claim("groups-cifar10", "NoRA, Figure 2",
          "More groups give higher accuracy: 8 → 64 groups raises CIFAR-10 accuracy.",
          "≈92.2 → 93.1", "05_group_scaling", "Runs",
          Gain("easy_gain_g64_vs_g8", "64 − 8 groups (easy)", se="easy_gain_se"),
          "accuracy, 64 groups − 8 groups > 2 s.e. (easy task)"),
    Claim("groups-cifar100", "NoRA, Figure 2",
          "More groups give higher accuracy: 8 → 64 groups raises CIFAR-100 accuracy.",
          "≈77.6 → 79.6", "05_group_scaling", "Runs",
          Gain("hard_gain_g64_vs_g8", "64 − 8 groups (hard)", se="hard_gain_se"),
          "accuracy, 64 groups − 8 groups > 2 s.e. (hard task)"),
    Claim("groups-parameters", "NoRA, Figure 2",
          "The trainable parameters grow only moderately with the group count (sub-linearly).",
          "≈13K → 28K (×2.2) for 8 → 64 groups", "05_group_scaling", "Runs",
          Ratio("params_g64", "params_g8", "params(64) / params(8)", hi=2.2),
          "parameters with 64 groups ≤ 2.2 × those with 8 (the paper's ratio), head included"),
    Claim("convergence", "NoRA, Figure 5",
          "NoRA converges faster than full fine-tuning.",
          "test accuracy stable by epoch ≈20 vs ≈45 (of 50)", "05_group_scaling",
          "Convergence: NoRA against full fine-tuning, per epoch",
          AllOf([Exceeds(f"{t}_test_converged_epoch_full", f"{t}_test_converged_epoch_nora", ("full", "NoRA"),
                         digits=1, tag=f" ({t}, epochs)") for t in ("easy", "hard")]),
          "epochs to converge, full − NoRA > 2 s.e., both tasks"),
    # ---- Table 2 (chapter 06)
    Claim("mmlu-average", "NoRA, abstract and Table 2",
          "On LLaMA3-8B instruction tuning NoRA++ raises the average MMLU accuracy over LoRA on every instruction set.",
          "+0.3 to +0.8 (five sets)", "06_llama_instruct", "Table 2, redone",
          AllOf([Gain(f"{s}_average_delta", f"{s}", ci95=f"{s}_average_delta_ci95") for s in _SETS]),
          "NoRA++ − LoRA, average accuracy > 2 s.e. on every set (s.e. from the chapter's 95 % CI over seeds)",
          unrecorded="ShareGPT-Hyper is tuned in the paper profile only; the book profile generates four sets"),
    Claim("mmlu-stem", "NoRA, abstract and Table 2",
          "The largest gains are in STEM: +1.6 (Alpaca), +2.3 (MathInstruct), +1.3 (OpenOrca).",
          "+1.6 / +2.3 / +1.3", "06_llama_instruct", "Table 2, redone",
          AllOf([Gain(f"{s}_stem_delta", f"{s} STEM", ci95=f"{s}_stem_delta_ci95")
                 for s in ("alpaca", "mathinstruct", "openorca")]),
          "NoRA++ − LoRA on STEM > 2 s.e., all three sets"),
    Claim("llama-extra-parameters", "NoRA, abstract",
          "NoRA++ adds few trainable parameters to LoRA on LLaMA3-8B.",
          "no count given", "06_llama_instruct", "What NoRA++ costs",
          Ratio("llama3_8b_nora_plus_trainable", "llama3_8b_lora_trainable", "NoRA++ / LoRA (LLaMA3-8B)", hi=1.01, digits=5),
          "NoRA++'s trainable count on LLaMA3-8B ≤ 1.01 × LoRA's"),
    # ---- Tables 3-5, Figure 3 (chapter 07)
    Claim("table3-learnable-activations", "NoRA, Table 3",
          "Other learnable activations (PReLU, AReLU, ELU) in place of GELU fall well behind NoRA.",
          "NoRA 77.46 vs 53.21 / 54.17 / 52.84", "07_ablations", "Table 3: other learnable activations in place of GELU",
          AllOf([Gain(f"hard_nora_minus_{m}", f"NoRA − {m}") for m in ("prelu", "arelu", "elu")]),
          "NoRA − each of PReLU, AReLU, ELU > 2 s.e. (hard task)"),
    Claim("table4-tuning-methods", "NoRA, Table 4",
          "NoRA beats tuning the rational's coefficients directly, zero-init and GELU-init tuning, and const-tuning.",
          "77.46 vs 76.56 / 76.44 / 76.07 / 74.91", "07_ablations", "Table 4: ways to tune the rational",
          AllOf([Gain(f"hard_nora_minus_{m}", f"NoRA − {m}") for m in ("full", "zero_delta", "const")]),
          "NoRA − each of coefficient tuning (rational = GELU-init here), zero-init, const-tuning > 2 s.e."),
    Claim("table5-numerator-only", "NoRA, Table 5",
          "Perturbing numerator and denominator together beats perturbing the numerator only.",
          "90.88 / 77.46 vs 86.92 / 73.58", "07_ablations", "Table 5: perturbing the numerator, the denominator, or both",
          AllOf([Gain(f"{t}_nora_minus_numerator", f"both − numerator ({t})") for t in ("easy", "hard")]),
          "both − numerator only > 2 s.e., both tasks"),
    Claim("table5-denominator-only", "NoRA, Table 5",
          "Perturbing numerator and denominator together beats perturbing the denominator only.",
          "90.88 / 77.46 vs 87.40 / 74.16", "07_ablations", "Table 5: perturbing the numerator, the denominator, or both",
          AllOf([Gain(f"{t}_nora_minus_denominator", f"both − denominator ({t})") for t in ("easy", "hard")]),
          "both − denominator only > 2 s.e., both tasks"),
    Claim("figure3-rank", "NoRA, Figure 3",
          "Accuracy rises with the rank up to r = 8, then saturates.",
          "best at r = 8 (CIFAR-100)", "07_ablations", "Figure 3: the rank",
          Exceeds("hard_acc_rank8", "hard_acc_rank1", ("r = 8", "r = 1")),
          "accuracy, r = 8 − r = 1 > 2 s.e. (hard task)"),
    # ---- Table 6 (chapter 08)
    Claim("table6-parameters", "NoRA, Table 6",
          "NoRA trains over 17 times fewer parameters than LoRA (head excluded).",
          "2.10K vs 37.24K", "08_efficiency", "The paper's Table 6 beside ours",
          Ratio("lora_params_no_head", "nora_params_no_head", "LoRA / NoRA", lo=17, digits=1),
          "LoRA's trainable parameters (no head) ≥ 17 × NoRA's"),
    Claim("table6-latency", "NoRA, Table 6",
          "NoRA's inference latency stays comparable to LoRA's.",
          "5.69 vs 5.30 ms / sample (× 1.07, GPU)", "08_efficiency", "The paper's Table 6 beside ours",
          Within("latency_nora_x_lora", "latency NoRA / LoRA", hi=1.10, seeded=True),
          "latency NoRA / LoRA ≤ 1.10 (the paper's 1.07 + 0.03), mean + 2 s.e. included"),
    Claim("table6-flops", "NoRA, Table 6",
          "NoRA's rational activations add only a slight FLOPs overhead over LoRA.",
          "1.07G vs 0.91G (× 1.18)", "08_efficiency", "The paper's Table 6 beside ours",
          Ratio("nora_gflops", "lora_gflops", "FLOPs NoRA / LoRA", lo=1.0, hi=1.18, digits=3),
          "1 ≤ NoRA's FLOPs / LoRA's ≤ 1.18 (the paper's ratio)"),
    # ---- Figures 4, 6, 7 (chapter 09)
    Claim("figure4-adaptability", "NoRA, Figure 4",
          "Mainstream PEFT methods change the activation distributions less than NoRA does.",
          "NoRA highest (figure, no numbers)", "09_analysis", "Adaptability score (Figure 4)",
          AllOf([Exceeds("adapt_nora", f"adapt_{m}", ("NoRA", lab), digits=3) for m, lab in (("lora", "LoRA"), ("dora", "DoRA"))]),
          "adaptability score, NoRA − LoRA and NoRA − DoRA > 2 s.e."),
    Claim("figure6-clusters", "NoRA, Figure 6",
          "NoRA's features cluster as clearly as full fine-tuning's (t-SNE).",
          "similar clusters (picture)", "09_analysis", "Features: t-SNE and cluster quality (Figure 6)",
          Exceeds("silhouette_nora", "silhouette_full", ("NoRA", "full"), digits=3),
          "silhouette, NoRA − full > 2 s.e. (clearly lower fails)"),
    Claim("figure7-gradcam", "NoRA, Figure 7",
          "After fine-tuning the activations, Grad-CAM focuses more on the object.",
          "stronger focus (picture)", "09_analysis", "Grad-CAM on the last block (Figure 7)",
          Exceeds("cam_ink_nora", "cam_ink_probe", ("NoRA", "before (probe)"), digits=3),
          "Grad-CAM mass on the ink, NoRA − before tuning > 2 s.e."),
    # ---- Appendix B, the rational approximation theory (chapter 01)
    Claim("b1-density", "NoRA, App. B (Eq. 32)",
          "Rational functions are dense in C(K): the best error tends to 0 as the degree grows.",
          "Stone–Weierstrass", "01_pade_density", "1. Density and rates for the smooth activations (B1, B2)",
          AllOf([Flag("all_curves_decrease", "every error curve decreases"),
                 Within("smooth_rational_final_error_max", "largest error at the top degree", hi=1e-8, digits=None)]),
          "every error curve decreases; the smooth ones reach 1e-8"),
    Claim("b2-geometric", "NoRA, App. B (Eq. 33)",
          "For analytic activations the best rational approximants converge geometrically.",
          "E ≤ C ρ^-N, ρ > 1", "01_pade_density", "1. Density and rates for the smooth activations (B1, B2)",
          AllOf([Within("rational_r2_geometric_min", "smallest R² of the geometric fits", lo=0.95, digits=3)]
                + [Within(f"rho_rational_{f}_8", f"ρ {f}", lo=1.0, digits=2) for f in ("gelu", "silu", "tanh", "sigmoid")]),
          "the geometric law fits every rational error curve (R² ≥ 0.95), ρ > 1 on [−8, 8]"),
    Claim("b2-faster-than-polynomials", "NoRA, App. B (Eq. 33)",
          "Rational approximants converge faster than polynomial ones.",
          "“substantially faster”", "01_pade_density", "1. Density and rates for the smooth activations (B1, B2)",
          AllOf([Ratio(f"rho_rational_{f}_8", f"rho_poly_{f}_8", f"ρ ratio {f}", lo=1.0) for f in ("gelu", "silu", "tanh", "sigmoid")]),
          "rational ρ / polynomial ρ > 1 for GELU, SiLU, tanh, sigmoid on [−8, 8]"),
    Claim("b2-polynomials-algebraic", "NoRA, App. B (Eq. 33)",
          "Polynomial schemes converge only algebraically for these activations.",
          "“algebraic rates of many polynomial schemes”", "01_pade_density",
          "1. Density and rates for the smooth activations (B1, B2)",
          Within("poly_geometric_fits_better_than_algebraic", "cases where the geometric law fits better", hi=3),
          "the algebraic law fits the polynomial errors better in most of the 8 cases"),
    Claim("b3-kinks", "NoRA, App. B (Eq. 34)",
          "For kinks (|x|, ReLU) rational errors decay root-exponentially, polynomial errors only algebraically.",
          "E ≤ C e^(−c√N) vs algebraic", "01_pade_density", "2. Kinks: $|x|$ and ReLU (B3)",
          AllOf([Within("abs_rational_rootexp_r2", "R² root-exp. (rational)", lo=0.95, digits=3),
                 Within("abs_rational_rootexp_c", "c", lo=1e-9, digits=2),
                 Within("abs_poly_algebraic_r2", "R² algebraic (polynomial)", lo=0.99, digits=4)]),
          "root-exponential law fits the rational errors (R² ≥ 0.95, c > 0), algebraic the polynomial ones (R² ≥ 0.99)"),
    Claim("b4-pole-free-margin", "NoRA, App. B (Eq. 31)",
          "Approximation with a pole-free margin on K is available and keeps the fits usable.",
          "assumed (Eq. 31)", "01_pade_density", "3. Where the poles are, and what the safe denominator costs (B4)",
          Within("form_a_cost_ratio_max", "form A / unconstrained error", hi=10, digits=2),
          "NoRA's form A (Q ≥ 1 on ℝ) within 10 × the unconstrained best error, every type tried"),
    Claim("init-matches-gelu", "NoRA, §3 (initialisation)",
          "At initialisation the adapted activations are equivalent to the original ones (GELU).",
          "“equivalent … at the start of training”", "01_pade_density", "5. The shipped GELU fit against real pre-activations",
          AllOf([Within("vit_step0_feature_dev", "step-0 feature deviation", hi=0.01, digits=4),
                 Within("vit_step0_top1_agreement", "top-1 agreement", lo=0.99, digits=4)]),
          "step 0 on the pre-trained backbone: features within 1 % of GELU's, ≥ 99 % of predictions kept"),
    # ---- the method (chapter 03)
    Claim("init-identity", "NoRA, §3 (initialisation)",
          "With B = 0 NoRA reproduces the base rational network exactly.",
          "exact at initialisation", "03_method", "Identity at initialisation on ViT-Tiny",
          Within("identity_vs_base", "max |NoRA − base| (logits)", hi=0.0),
          "largest logit difference NoRA − base network = 0"),
    Claim("table6-counts-reconcile", "NoRA, Table 6",
          "Table 6's parameter counts are those of a NoRA and a LoRA configuration of ViT-Tiny.",
          "2.10K (NoRA), 37.24K (LoRA)", "03_method", "Parameter accounting, reconciled with the paper",
          AllOf([Within("nora_configs_giving_2_10k", "NoRA (r, G) giving 2.10K", lo=1),
                 Within("lora_configs_giving_37_24k", "LoRA configurations giving 37.24K", lo=1)]),
          "at least one NoRA (r, G) and one LoRA configuration give the counts"),
    # ---- Appendix A, why tune activations (chapter 02)
    Claim("a1-span", "NoRA, App. A.1 (Eq. 13)",
          "The first-order change from activation tuning lies in a span of at most G·(m+n+1) dimensions per layer.",
          "dim ≤ G (m + n + 1) per layer", "02_ntk_complementarity", "A.1: the span of first-order changes",
          AllOf([Ratio("a1_rank_mlp_1e8", "a1_bound_mlp", "rank / bound (MLP)", hi=1.0),
                 Ratio("a1_rank_vit_1e8", "a1_bound_vit", "rank / bound (ViT)", hi=1.0)]),
          "numerical rank of the Jacobian ≤ the bound (MLP of Eq. 9 and a ViT)"),
    Claim("abstract-low-dim-subspace", "NoRA, abstract",
          "NoRA constrains adaptation to a low-dimensional functional subspace.",
          "(qualitative)", "02_ntk_complementarity", "A.1: the span of first-order changes",
          Ratio("a1_rank_nora_init_1e8", "a1_bound_nora_init", "rank / 2Gr per layer (NoRA at init)", hi=1.0),
          "rank of NoRA's first-order span at initialisation ≤ 2Gr per layer"),
    Claim("prop-a1-complementarity", "NoRA, App. A.4 (Prop. A.1)",
          "At initialisation the weight and activation gradients are uncorrelated: the NTK cross term vanishes.",
          "E[cross term] = 0 (Eq. 24)", "02_ntk_complementarity", "A.4: the NTK blocks and Proposition A.1",
          AllOf([ZeroMean("prop_a1_readout_abs_z_max", "readout cross term"),
                 ZeroMean("prop_a1_hidden_z_min", "hidden-weight cross term")]),
          "mean cross term over 16 initialisations within 2 s.e. of zero (jackknife), readout and hidden weights"),
    Claim("a4-kernel-adds-directions", "NoRA, App. A.4",
          "The activation kernel K_θ complements the weight kernel K_W: it adds directions.",
          "(qualitative)", "02_ntk_complementarity", "A.4: the NTK blocks and Proposition A.1",
          Exceeds("ntk_erank_normsum_pretrained", "ntk_erank_kw_pretrained", ("erank(K_W + K_θ)", "erank(K_W)"), digits=1),
          "effective rank, equal-budget K_W + K_θ − K_W > 2 s.e."),
    Claim("thm-a1-deviation-bound", "NoRA, App. A.2 (Thm. A.1)",
          "The network's deviation under an activation update is bounded by the layer-wise activation changes.",
          "Eqs. 17–19", "02_ntk_complementarity", "A.2: how tight is the deviation bound of Theorem A.1?",
          AllOf([Within("thm_a1_min_ratio_pointwise", "smallest bound / actual (pointwise)", lo=1.0, digits=1),
                 Within("thm_a1_min_ratio_uniform", "smallest bound / actual (uniform)", lo=1.0, digits=0)]),
          "bound ≥ actual deviation for every input, update and seed"),
    Claim("a6-saturation", "NoRA, App. A.6 (Eqs. 27–28)",
          "Tuning the activations keeps units responsive (less saturated).",
          "(qualitative)", "02_ntk_complementarity", "A.6: saturation before and after NoRA tuning",
          Majority("sat_layers_less_saturated", "sat_layers_total", "(layer, seed) pairs less saturated after NoRA"),
          "the saturated fraction falls in every (layer, seed) pair (fails in fewer than half)"),
    Claim("a7-generalisation", "NoRA, App. A.7 (Eq. 29)",
          "Bounded activation parameters give a Lipschitz-based generalisation bound.",
          "capacity bound (Eq. 29)", "02_ntk_complementarity", "The statements, reconstructed",
          NotTestable("a capacity bound with an unspecified polynomial constant: nothing to measure it against")),
    # ---- LoRAN (chapter 10)
    Claim("loran-vs-qlora-classification", "LoRAN",
          "LoRAN (Sinter) consistently improves over QLoRA: classification.",
          "consistent gains", "10_loran", "Classification: QLoRA, LoRAN with four activations, and LoRA",
          Gain("class_sinter_vs_qlora", "LoRAN − QLoRA (accuracy)"),
          "accuracy, LoRAN (Sinter) − QLoRA > 2 s.e."),
    Claim("loran-vs-qlora-summarization", "LoRAN",
          "LoRAN (Sinter) consistently improves over QLoRA: summarization.",
          "consistent ROUGE gains", "10_loran", "Generation: summarizing dialogues with the tiny LLaMA",
          AllOf([Gain(f"gen_sinter_vs_qlora_{m}", f"{m}") for m in ("rouge1", "rouge2", "rougeL")]),
          "ROUGE-1, -2, -L, LoRAN (Sinter) − QLoRA > 2 s.e."),
    Claim("sinter-vs-activations-classification", "LoRAN (ablation)",
          "Sinter outperforms Sigmoid, ReLU and Tanh on the low-rank update: classification.",
          "Sinter best; +1 to +2 over ReLU", "10_loran", "Classification: QLoRA, LoRAN with four activations, and LoRA",
          AllOf([Gain(f"class_sinter_vs_{m}", f"Sinter − {m}") for m in ("sigmoid", "relu", "tanh")]),
          "accuracy, Sinter − each of Sigmoid, ReLU, Tanh > 2 s.e."),
    Claim("sinter-vs-activations-summarization", "LoRAN (ablation)",
          "Sinter outperforms Sigmoid, ReLU and Tanh on the low-rank update: summarization.",
          "Sinter best", "10_loran", "Generation: summarizing dialogues with the tiny LLaMA",
          AllOf([Gain(f"gen_sinter_vs_{m}", f"Sinter − {m}") for m in ("sigmoid", "relu", "tanh")]),
          "ROUGE, Sinter − each of Sigmoid, ReLU, Tanh > 2 s.e."),
    Claim("sinter-structured-perturbation", "LoRAN",
          "Sinter adds a structured perturbation to the update, at no parameter cost, that changes the model.",
          "(qualitative)", "10_loran", "What Sinter does at the released constants",
          Within("gen_sinter_identical_pct", "generations unchanged when Sinter → identity", hi=99.0, digits=1, unit=" %"),
          "swapping Sinter for the identity after training changes ≥ 1 % of the generations"),
    Claim("loran-vs-lora", "LoRAN",
          "A nonlinear low-rank update is more expressive than LoRA's linear one: LoRAN beats LoRA at equal parameters.",
          "(motivation)", "10_loran", "NoRA++ against LoRAN at matched parameters",
          Exceeds("h2h_loran_all", "h2h_lora_all", ("LoRAN", "LoRA")),
          "accuracy, LoRAN − LoRA on all layers (equal parameters) > 2 s.e."),
)


def by_chapter(chapter: str) -> tuple[Claim, ...]:
    """The claims a chapter shows, in registry order."""
    return tuple(c for c in CLAIMS if c.chapter == chapter)


def evaluate(records: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> list[tuple[Claim, Outcome]]:
    """Each claim with its outcome on ``records`` (``{chapter: {"values": ...}}``, as ``results.load_all`` returns)."""
    out = []
    for claim in claims:
        values = records.get(claim.chapter, {}).get("values")
        if values is None:
            out.append((claim, Outcome("not testable here", "—", f"{claim.chapter} has recorded no results")))
        else:
            out.append((claim, claim.evaluate(values)))
    return out
