"""``kd-edge bench``: ONNX models timed under an emulated board. Numpy and onnxruntime only, never torch.

harness.py     BenchJob -> run_benchmark() -> BenchReport: interleaved rounds, one child process each
child.py       what one child process does: constrain, load, time (and the drone loop)
emulate.py     the board's constraints (cores, memory, CPU quota), applied and read back
profiles.py    the boards: cores, memory, per-core peaks
projection.py  a board's latency, projected from the host's measured throughput
render.py      the report as Markdown and as a PNG
"""
