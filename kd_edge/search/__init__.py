"""Searching for a recipe or a student: orchestrators above the stages, like the pipeline.

sweep.py           `kd-edge sweep`: a grid of temperatures and alphas, several seeds per cell
student_search.py  `kd-edge search`: the most accurate student within a board's budgets
space.py           the student space and its pure rules: budgets, successive halving, the Pareto front
timing.py          candidates exported, quantized and timed on the emulated board
train.py           candidates distilled a rung at a time
summary.py         search.md and search.png
"""
