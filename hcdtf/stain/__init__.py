"""`hcdtf stain fit|apply`: stain targets fitted on images and stain-normalised copies of patches.
The Keras stain layers themselves are in `hcdtf.models.stain` (they live inside models)."""
