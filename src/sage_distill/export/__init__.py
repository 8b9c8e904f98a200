"""Deployment: the ARC model as ONNX graphs (prefill, and one decoding step with past keys and values)."""
