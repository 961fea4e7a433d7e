"""The book's lab: the code that re-runs the papers' experiments on top of the ``nora`` library.

Nothing in the library (``nora/`` outside this folder) imports from here; a test holds that.
A chapter's code is found from its name, ``NN_topic`` -> ``nora/experiments/topic.py``
(:data:`CHAPTERS`); each chapter module holds its own ``PROFILES`` (the smoke / book / paper sizes
that :func:`nora.experiments.profiles.settings` returns) beside its experiment code:

    01_pade_density         pade_density.py         sizes; the computations are in theory.py
    02_ntk_complementarity  ntk_complementarity.py  sizes; the computations are in theory.py
    03_method               method.py               sizes (the chapter calls the library alone)
    04_vit_transfer         vit_transfer.py         fine_tune / lr_search / compare: the transfer
                                                    unit of every vision chapter (05, 07, 09, 10)
    05_group_scaling        group_scaling.py        sizes (fine-tunes with vit_transfer)
    06_llama_instruct       llama_instruct.py       one Table-2 cell; ``python -m`` for the paper profile
    07_ablations            ablations.py            exact-at-init base, data-weighted fits, probes
    08_efficiency           efficiency.py           interleaved timings, FLOPs, memory
    09_analysis             analysis.py             adaptability score, t-SNE, Grad-CAM, shapes
    10_loran                loran.py                the LoRAN paper's LLM runs: QLoRA vs LoRAN in NF4

Shared by the chapters:

    theory.py       approximation rates (Appendix B) and empirical NTKs (Appendix A), chapters 01-02
    data/           the generated source task, the embedded digits tasks, real CIFAR loaders
    train.py        the seeded training loop (AdamW, cosine schedule, per-epoch curves)
    backbone.py     the pre-trained ViT of each profile and its pre-training (``python -m``)
    glyph_backbone.py  the 12-block ``glyphs`` backbone: stream pre-training, sharded checkpoint
    methods.py      every fine-tuning method the vision chapters compare, by name (build_method)
    llm/            generated corpus and MMLU-format benchmark, tokenizer, tiny LLaMA pre-training,
                    instruction tuning, hub sources, 5-shot MMLU, generated dialogues
    checkpoints/    the shipped book-profile backbones, with their provenance
    profiles.py     which profile is active; ``settings``, ``resolve_seeds``
    results.py      ``results/<profile>/<notebook>.json`` and glue
    book.py         the book runner: ``python -m nora.book run|stamp|build|vendor``
    execute.py      its worker: one notebook, all or nothing, with what the run depended on
    runcache.py     whether a chapter's last run is up to date; stamps

Import ``nora`` first (it makes the registry's torchvision importable next to a CPU torch).
"""

from __future__ import annotations

__all__ = ["CHAPTERS"]

# Notebook name -> the module of nora.experiments that holds its experiment code and PROFILES.
CHAPTERS: dict[str, str] = {
    "01_pade_density": "pade_density",
    "02_ntk_complementarity": "ntk_complementarity",
    "03_method": "method",
    "04_vit_transfer": "vit_transfer",
    "05_group_scaling": "group_scaling",
    "06_llama_instruct": "llama_instruct",
    "07_ablations": "ablations",
    "08_efficiency": "efficiency",
    "09_analysis": "analysis",
    "10_loran": "loran",
}
