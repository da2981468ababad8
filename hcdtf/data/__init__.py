"""The built data set: finding it, splits and folds, the tf.data pipelines (`pipeline`), the leak
audit (`audit`) and the data identity that runs record (`identity`).

Before hcdtf 0.2 this package was one module, `hcdtf.data`; its names (`hcdtf.data.make_dataset`,
...) still resolve here, with a DeprecationWarning, for one release (see `hcdtf.compat`).
"""


def __getattr__(name):  # old `hcdtf.data.<name>` -> `hcdtf.data.pipeline.<name>`
    from hcdtf import compat

    return compat.moved_attribute(__name__, "hcdtf.data.pipeline", name)
