"""From a trained checkpoint to what a board runs: ONNX, INT8, QAT, the bundle, and its check on aarch64.

    export.py            the export stage: a checkpoint to a checked ONNX model
    onnx_graph.py        torch -> ONNX (dynamo or TorchScript), the card in its metadata, the parity check
    from_checkpoint.py   a checkpoint's file name, exported card and dataset
    quantize.py          the quantize stage: ONNX Runtime INT8 within an accuracy budget
    quantize_latency.py  which nodes stay FP32 for speed; INT8 against FP32 at the end
    qat.py               quantization-aware fine-tuning (torchao PT2E) and its learnt FP32 graph
    bundle.py            the bundle stage: the deployable form chosen, the folder and its archive
    verify_arm.py        the bundle run on aarch64 ONNX Runtime under QEMU, compared with the host
    arm_userland.py      the cached aarch64 userland verify-arm runs in

A stage never calls another: ``kd_edge.pipeline`` chains them.
"""
