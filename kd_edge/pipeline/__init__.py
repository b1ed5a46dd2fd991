"""Where stages are chained: the full pipeline in one run folder, the short chains of single commands, and
the report of a run.

    stages.py  the pipeline's stages in order, what each reads, writes and depends on
    runner.py  run_pipeline(): fingerprints, resume, a changed setting reruns what depends on it
    chains.py  `kd-edge bundle` (export, quantize, bundle), `export --int8/--bundle`, `qat` (fine-tune, quantize)
    report.py  report.md and report.html from a run folder's files
"""
