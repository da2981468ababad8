"""hcdtf: reproduce, extend and deploy "ResNet for Histopathologic Cancer Detection, the Deeper, the Better?".

Importing the package does no work: TensorFlow is imported lazily by the modules that need it.
The one thing it does is prefer TensorFlow's oneDNN kernels on x86-64 CPUs (sets
``TF_ENABLE_ONEDNN_OPTS=1`` unless the environment says otherwise or TensorFlow is already
imported; see ``hcdtf.runtime.prefer_onednn``): their convolution gradients are much faster than
the default Eigen kernels on AVX2 CPUs (figures in benchmarks/README.md).
"""

__version__ = "0.1.0"

from hcdtf import compat as _compat  # noqa: E402
from hcdtf import runtime as _runtime  # noqa: E402

_runtime.prefer_onednn()
_compat.install_old_module_paths()  # `import hcdtf.metrics` (hcdtf 0.1) still works, with a warning
