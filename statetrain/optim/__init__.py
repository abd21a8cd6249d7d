"""Optimizers, schedules and the loss they minimise: the ``optim``/``lr_scheduler_type`` registries,
HF's weight-decay grouping, label smoothing, label-item counting and the NaN/Inf policies.

May import ``statetrain.args`` and ``statetrain.events``; never the machine, states or trainer.
"""
