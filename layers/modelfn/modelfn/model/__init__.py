"""The model: tensor signatures and coercion, the loaded version that runs requests, onnxruntime sessions."""
