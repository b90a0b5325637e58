"""The numpy core shared by training, evaluation and the predictor, so they can never disagree:
preprocessing, the one inference loop, HU post-processing, slice choice, overlap metrics and the muscle
measurements. Nothing here imports TensorFlow, ONNX Runtime or a DICOM library."""
