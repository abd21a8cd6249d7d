"""Several processes: the ``accelerate.Accelerator`` built from the arguments, the DDP/FSDP/DeepSpeed
plugins, and what processes agree on (preemption, the checkpoint to resume from, log levels).

May import ``context`` and the layers below it; never checkpoint writing, states or the trainer.
"""
