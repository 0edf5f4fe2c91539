"""EvalNet: training data, training, ensembles, thresholds and the ``evalnet_select`` labeler.

The stage that ties these to a run lives in :mod:`imseg.experiment.evalnet_stage`.
"""
