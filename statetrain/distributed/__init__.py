"""Several processes: the ``accelerate.Accelerator`` built from the arguments, the DDP/FSDP/DeepSpeed
plugins, what processes agree on (preemption, the checkpoint to resume from, log levels), and
releasing the process groups at exit so that a finished run's process ends cleanly.

May import ``context`` and the layers below it; never checkpoint writing, states or the trainer.
"""
