"""Regenerate ``corpus.txt`` and ``tokenizer/`` for ``tiny-gpt2.yaml`` (run from anywhere, offline).

The corpus is a few hundred short sentences made from templates, so the example needs no download;
the tokenizer is a 512-token byte-level BPE trained on it with the ``tokenizers`` library and
saved with ``save_pretrained`` so ``AutoTokenizer.from_pretrained`` reads it.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBJECTS = ["the trainer", "a checkpoint", "the machine", "every callback", "the optimizer", "a small model"]
VERBS = ["saves", "reads", "writes", "checks", "resumes", "fires", "logs", "builds"]
OBJECTS = ["the state", "a manifest", "the loss", "an event", "the weights", "the schedule", "a batch"]
ENDINGS = ["at every step.", "after each epoch.", "before the run ends.", "when it is asked.", "bit for bit."]


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}".capitalize()
        for _ in range(lines)
    ]


def main() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = corpus()
    (HERE / "corpus.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(text, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(HERE / "tokenizer")


if __name__ == "__main__":
    main()
