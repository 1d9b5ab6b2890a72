"""Optimizers torch lacks, one module each, named by ``_target_`` in ``conf/optim/<option>.yaml``."""
