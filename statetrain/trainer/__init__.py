"""The HF facade: ``Trainer`` and its mixins (training step, training data, optimization,
evaluation, checkpoint hooks, model options, batch-size search, hyperparameter search) that
assemble a run and hand it to the engine.

May import every layer below it; only ``testing``, ``examples``, ``demo`` and ``cli`` import it.
"""
