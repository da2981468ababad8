"""Slide-level learning from slide labels: attention MIL over bags of patch embeddings.

``hcdtf slide embed`` turns each slide into a bag (HDF5 ``features`` [n, d] + ``coords``); this
package trains a gated-attention MIL model on the bags (:mod:`hcdtf.mil.model`, Ilse et al. 2018,
the attention branch of CLAM-SB), with a run directory that resumes exactly
(:mod:`hcdtf.mil.train`), and evaluates, predicts, draws attention maps and exports it
(:mod:`hcdtf.mil.evaluate`). Importing it imports neither TensorFlow nor Keras.
"""

# mil train --head: gated-attention MIL (Ilse et al. 2018); CLAM-SB (Lu et al. 2021): the same
# attention branch plus per-class instance classifiers trained on the most and least attended patches.
HEADS = ("abmil", "clam_sb")
