"""The `--augment` values and the view `auto` means per data family.

Kept apart from pie.data.views (the views themselves, in TensorFlow) so that the
training stage's flags are defined, and refused, without loading TensorFlow.
"""
from pie.io import errors

AUGMENTS = ("auto", "none", "flip_crop", "inception_crop")
AUTO = {"imagenet": "inception_crop", "cifar": "flip_crop", "small": "none", "toy": "none"}


def resolve(augment, family):
    """The concrete view for an `--augment` value and a data family."""
    if augment is True:  # the older boolean form: the family's default
        augment = "auto"
    elif augment is False or augment is None:
        augment = "none"
    if augment not in AUGMENTS:
        raise errors.UsageError(f"unknown --augment '{augment}'; allowed: {', '.join(AUGMENTS)}")
    if augment == "auto":
        return AUTO[family]
    if family == "toy" and augment != "none":
        raise errors.UsageError(f"--augment={augment} needs images; the toy sets are 2-D points: "
                                "use none or auto")
    return augment
