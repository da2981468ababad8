"""benchmarks.stain --looks: a run's AUC on the same synthetic tissue rendered as each centre."""

import numpy as np


def test_looks_scores_one_tissue_under_each_centre(trained_run):
    from sklearn.metrics import roc_auc_score

    from benchmarks import stain
    from hcdtf.inference import loading, scoring
    from hcdtf.synthetic.centres import centre_look
    from hcdtf.synthetic.patch import generate_patch
    from hcdtf.synthetic.streams import patch_rng

    out = stain.looks([trained_run], n=6, k=2)
    assert out["patches"] == 6 and list(out["runs"]) == [str(trained_run)]
    # look 1 is the same tissue as look 0 in other colours: recomputed here, patch by patch
    scorer = scoring.keras_scorer(loading.load_model(trained_run))
    labels = np.arange(6) % 2
    for look in (0, 1):
        images = np.stack([generate_patch(patch_rng(stain.LOOKS_SEED, "train", i), int(labels[i]),
                                          centre_look(look))[0] for i in range(6)])
        assert out["runs"][str(trained_run)][str(look)] == round(float(roc_auc_score(labels, scorer(images))), 4)
