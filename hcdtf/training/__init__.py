"""Training: the epoch loop with exact resume (`train`), the multi-worker epoch (`distributed`) and
the pixel logistic-regression baseline (`baseline`)."""
