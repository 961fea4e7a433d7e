"""The LLM pieces of the lab (NoRA's Section 4.3 / Table 2, LoRAN's generation runs): one code path at two scales.

- ``corpus``: the offline stand-ins — a generated fact world, pre-training text, instruction sets in
  four distinct styles (Alpaca format) and a 5-shot multiple-choice benchmark in MMLU's format;
- ``tokenizer``: a byte-level BPE tokenizer trained with ``tokenizers`` on the generated text;
- ``pretrain``: the tiny LLaMA the book profile fine-tunes, pre-trained and cached reproducibly;
- ``instruct``: Alpaca prompts, prompt-masked SFT with transformers' ``Trainer``, LoRA / NoRA++;
- ``sources``: the paper profile's instruction datasets through HF ``datasets`` (Alpaca format);
- ``mmlu``: Hendrycks' 5-shot protocol (our scorer and lm-eval, local task or ``mmlu``);
- ``power``: the statistics of a paired comparison over questions × seeds (delta, intervals,
  variance components, minimum detectable effect, design sizes);
- ``summarize``: generated two-person dialogues about the fact world, and ROUGE scoring.

The chapter modules that use them: :mod:`nora.experiments.llama_instruct` (06: one Table-2 cell,
and ``python -m nora.experiments.llama_instruct`` for the paper profile on several GPUs, with
``configs/accelerate_fsdp.yaml``) and :mod:`nora.experiments.loran` (10).

Import ``nora`` before this package (it makes torchvision importable next to a CPU torch).
"""
