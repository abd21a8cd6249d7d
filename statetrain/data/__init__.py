"""Batches as HF builds them: collators, unused-column removal, samplers, ``DataLoader`` options,
and the nested outputs the evaluation loop gathers.

May import ``statetrain.args`` and ``statetrain.events``; never the machine, states or trainer.
"""
