"""Semi-supervised methods over any transformers classifier (``AutoModelFor{Image,Sequence,Audio}Classification``).

One method per file, each the per-step objective on a labelled and an unlabelled batch; the semi-supervised trainer
in :mod:`hf_ssl.training` calls it and never asks which method it runs. Adding a method is one new file here.
"""
