"""The leave-one-out cross-validation of the infarct-core U-Net (paper Table 1)."""
