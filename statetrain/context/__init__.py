"""The run context every state works on: ``TrainerState``/``TrainerControl``/``EngineState`` (what
a checkpoint persists), ``Run`` (the live machinery of one ``train()`` call), the ``TrainerHooks``
protocol through which states reach the trainer, preemption requests, throughput and memory metrics.

May import ``data``, ``optim``, ``args`` and ``events``; never states, the engine or the trainer.
"""
