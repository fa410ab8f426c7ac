"""Semi-supervised image classification (job ``semi_image``): a transformers image classifier fine-tuned on a few
labelled images and many unlabelled ones, with :class:`hf_ssl.views.ImageWeakStrongViews` (flip and translation;
RandAugment and Cutout).

The classifier starts from ``--encoder``: an hf_ssl pretraining output or any image checkpoint
(``AutoModelForImageClassification.from_pretrained`` with a new head for the dataset's classes; a checkpoint whose
head has another class count gets a new head, with a warning), or a preset at random init (``vit-tiny``, ...). The
views run at the classifier's resolution and with the normalisation its pretraining used (the run record's), and the
output folder holds a ``ViTImageProcessor`` with both, so ``pipeline("image-classification")`` serves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForImageClassification

from ..data.images import ImageSplits, load_image_dataset, load_image_splits, load_image_stream
from ..modules.backbones import ENCODER_PRESETS, encoder_config
from ..publishing.run_record import recorded_normalisation
from ..views.processors import build_image_processor
from ..views.weak_strong import ImageWeakStrongConfig, ImageWeakStrongViews
from .arguments import VisionEncoderArguments
from .base import JobParts
from .semi import ClassifierArguments, SemiDataArguments, SemiSupervisedJob

logger = logging.getLogger(__name__)


@dataclass
class ImageClassifierArguments(ClassifierArguments, VisionEncoderArguments):
    """The classifier's start (``encoder``) and method; ``patch_size`` for presets. A preset is built at the views'
    ``image_size``; a checkpoint keeps its own resolution, which the views then use."""


def classifier_from(start: str, class_names: list[str], *, image_size: int, patch_size: int, overrides: dict):
    """An ``AutoModelForImageClassification`` for ``class_names``: a preset (or ``timm:<arch>``) at random init, or
    the checkpoint at ``start`` with a new classification head when its class count differs."""
    labels = {"num_labels": len(class_names), "id2label": dict(enumerate(class_names)),
              "label2id": {name: index for index, name in enumerate(class_names)}}
    if start in ENCODER_PRESETS or start.startswith("timm:"):
        config = encoder_config(start, image_size, patch_size, overrides)
        for key, value in labels.items():
            setattr(config, key, value)
        return AutoModelForImageClassification.from_config(config)
    config = AutoConfig.from_pretrained(start)
    if getattr(config, "num_labels", len(class_names)) != len(class_names) and getattr(config, "id2label", None) and \
            "architectures" in config.to_dict() and any("Classification" in name for name in config.architectures or []):
        logger.warning("%s classifies %d classes, the data has %d: its classification head is replaced by a new one "
                       "at random init", start, config.num_labels, len(class_names))
    for key, value in {**labels, **overrides}.items():
        setattr(config, key, value)
    if hasattr(config, "ssl_config"):  # an hf_ssl pretraining output: the classifier needs its encoder only
        del config.ssl_config
    return AutoModelForImageClassification.from_pretrained(start, config=config, ignore_mismatched_sizes=True)


class SemiImageJob(SemiSupervisedJob):
    """Semi-supervised fine-tuning of an image classifier; see the module docstring."""

    name = "semi_image"
    task = "image-classification"
    default_encoder = "vit-tiny"
    published_as = ("AutoModelForImageClassification", "classifier")
    argument_classes = (ImageClassifierArguments, SemiDataArguments, ImageWeakStrongConfig)

    @property
    def label_column(self) -> str:
        return "label"  # load_image_dataset's standard form, whatever --label_column named in the source

    def load_split(self, split: str):
        """``split``; for a dataset whose only split is the train split, the eval split is the held-out share of it
        (:func:`hf_ssl.data.images.load_image_splits`) and the train split the rest."""
        _, data_args, _ = self.arguments
        if split not in (data_args.train_split, data_args.eval_split):
            return load_image_dataset(data_args.dataset, split, label_column=data_args.label_column)
        if getattr(self, "_splits", None) is None:
            self._splits: ImageSplits = load_image_splits(data_args.dataset, data_args.train_split,
                                                          data_args.eval_split, label_column=data_args.label_column)
        return self._splits.train if split == data_args.train_split else self._splits.eval

    def load_stream(self, split: str):
        _, data_args, _ = self.arguments
        return load_image_stream(data_args.dataset, split, label_column=data_args.label_column)

    def build_classifier(self, class_names: list[str]):
        model_args, _, views = self.arguments
        model = classifier_from(model_args.encoder, class_names, image_size=views.image_size,
                                patch_size=model_args.patch_size, overrides=model_args.config_overrides())
        size = getattr(model.config, "image_size", None)
        if size is not None and size != views.image_size:
            logger.info("the views run at the classifier's resolution, %d px (not --image_size %d)", size,
                        views.image_size)
            views.image_size = int(size)
        recorded = recorded_normalisation(model_args.encoder)
        if recorded is not None:  # an hf_ssl pretraining output: normalise as its pretraining did
            views.mean, views.std = list(recorded[0]), list(recorded[1])
        return model

    def views(self, unlabelled):
        model_args, data_args, config = self.arguments
        return ImageWeakStrongViews(config, image_column="image")

    def image_processor(self):
        """The processor published with the classifier (``AutoImageProcessor``, ``pipeline("image-classification")``):
        the plain view's resize and normalisation, at the resolution :meth:`build_classifier` settled."""
        _, _, views = self.arguments
        return build_image_processor(views.image_size, views.mean, views.std, center_crop=False)

    def prepare(self) -> JobParts:
        parts = super().prepare()
        parts.trainer_kwargs["processing_class"] = self.image_processor()  # Trainer saves it with every checkpoint
        return parts

    def save_extras(self, output_dir: str, model) -> None:
        self.image_processor().save_pretrained(output_dir)
