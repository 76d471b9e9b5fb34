"""modelfn: a serverless function runtime for ONNX models.

Importing the package is cheap: the runtime pieces are imported by the modules that need them.
"""

__version__ = "0.1.0"
