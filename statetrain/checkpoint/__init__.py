"""Checkpoints on disk: the atomic, checksummed store, pickle-free tensor trees, RNG states, data
position, resume geometry, the sharded (FSDP, DeepSpeed) state and the multi-process commit; and
what converts them (transformers Trainer checkpoints in and out, PEFT adapters).

May import ``distributed``, ``context`` and the layers below; never states, the engine or the trainer.
"""
