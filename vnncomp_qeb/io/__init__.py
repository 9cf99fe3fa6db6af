"""File formats: ONNX → IR, VNN-LIB → Spec, results and witnesses, onnxruntime replay."""
