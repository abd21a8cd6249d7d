"""The engine, readable in one sitting: the machine declaration and its validation and splicing
(``machine``), the generic driver, the training plan, the default machine and the checks that a
machine has the states the arguments need.

May import ``states`` and everything below them; never callbacks or the trainer.
"""
