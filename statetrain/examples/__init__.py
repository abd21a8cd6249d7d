"""Example loops built from the states: GAN, round-robin multi-task, evaluation-only, LR range
test, curriculum. Each trains and resumes bit-exactly.

May import everything but ``testing``, ``demo`` and ``cli``.
"""
