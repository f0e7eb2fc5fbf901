"""Deployment: export to ONNX (and int8), the export folder's manifest, the web service."""
