"""Training on the host (torch): teachers and students, from data on the device to a checkpoint.

distill.py      the stages: train_teacher(settings, out), distill(settings, out, teachers=...)
teachers.py     the teachers a student learns from: loaded or trained, checked, soft labels cached
networks.py     a run's networks: built from a seed, fitted, tested, saved
soft_labels.py  frozen teachers' outputs and the one KD step (distill and QAT)
losses.py       the distillation losses, pure functions
fit.py          the fit loop (FitPlan, FitHooks); fit_state.py, what --resume continues from
optimizers.py   the optimiser and learning-rate schedule
splits.py       the run's dataset on its device; batches.py, batches normalised; augment.py, --augment
evaluate.py     predictions, accuracy, the chance level
device.py       device, precision, threads, seeding, memory layout
run_folder.py   the run folder's files and the rules of resuming it
checkpoint.py   checkpoints saved atomically and loaded with weights_only=True
models.py       the model registry and the families kd-edge search explores
distributed.py  what each torchrun process does
progress.py     what training tells its caller, epoch by epoch
"""
