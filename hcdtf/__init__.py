"""hcdtf: reproduce, extend and deploy "ResNet for Histopathologic Cancer Detection, the Deeper, the Better?".

Importing the package does no work: TensorFlow is imported lazily by the modules that need it.
"""

__version__ = "0.1.0"
