"""What the model sees of an image: the eval geometry and the random training views.

Eval: ImageNet-family images (varying sizes) are resized so the short side is 256
and centre-cropped to 224; the other families keep their pixels.

Training views (`--augment`):
  none            the eval geometry, nothing random
  flip_crop       a random crop (CIFAR style: pad 4 px and crop back; ImageNet family:
                  resize the short side to 256 and crop 224) and a random left-right flip
  inception_crop  a random-resized crop (8%-100% of the area, aspect 3/4-4/3) back to
                  the eval size, and a random flip
  auto            per family: inception_crop (imagenet), flip_crop (cifar), none
                  (small: digits and mnist are never flipped; toy: points)

Every random draw is stateless and seeded by (member seed, epoch, example key), so a
member's epoch is reproducible, and every epoch and every member sees other views.
"""
import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
# The --augment values and their resolution per family (views.AUGMENTS, views.resolve).
from pie.data.augments import AUGMENTS, AUTO, resolve  # noqa: F401
from pie.io import errors
import tensorflow as tf

IMAGENET_EVAL_SIZE = 224
IMAGENET_RESIZE = 256
CIFAR_PAD = 4
INCEPTION_AREA = (0.08, 1.0)
INCEPTION_ASPECT = (3 / 4, 4 / 3)
# tf.data traces each map function with AutoGraph, which rewrites the Python source of
# every function it calls: these use no Python control flow on tensors, and skipping
# the rewrite saves seconds per pipeline (every epoch of a streamed source has its own).
no_autograph = tf.autograph.experimental.do_not_convert


@no_autograph
def view_seed(seed, epoch, key):
    """The stateless seed of one example's view: (member seed, epoch) folded with its key."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(key, tf.int64))


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


@no_autograph
def _resize_short_side(image, short):
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = short / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    return tf.image.resize(image, new_size, antialias=True)


@no_autograph
def imagenet_eval_geometry(image):
    """Resize the short side to 256, centre-crop 224 (the standard eval view)."""
    image = _resize_short_side(image, IMAGENET_RESIZE)
    image = tf.image.resize_with_crop_or_pad(image, IMAGENET_EVAL_SIZE, IMAGENET_EVAL_SIZE)
    return _to_uint8(image)


@no_autograph
def fit_size(image, size):
    """`image` resized (antialiased) to `size` = (height, width) unless it has it: the
    fixed-size families' answer to an image of another size."""
    target = tf.constant(size, tf.int32)

    def resized():
        return _to_uint8(tf.image.resize(image, target, antialias=True))
    fitted = tf.cond(tf.reduce_all(tf.equal(tf.shape(image)[:2], target)),
                     lambda: image, resized)
    return tf.ensure_shape(fitted, [int(size[0]), int(size[1]), image.shape[-1]])


@no_autograph
def eval_geometry(image, family):
    return imagenet_eval_geometry(image) if family == "imagenet" else image


@no_autograph
def train_view(image, mode, family, shape, seed):
    """One training view of a decoded image; `shape` is the eval (model input) shape."""
    if mode == "none":
        return eval_geometry(image, family)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    height, width, channels = shape
    if mode == "flip_crop":
        if family == "imagenet":
            resized = _to_uint8(_resize_short_side(image, IMAGENET_RESIZE))
            image = tf.image.stateless_random_crop(resized, (height, width, channels),
                                                   seed=crop_seed)
        else:
            padded = tf.image.resize_with_crop_or_pad(image, height + 2 * CIFAR_PAD,
                                                      width + 2 * CIFAR_PAD)
            image = tf.image.stateless_random_crop(padded, (height, width, channels),
                                                   seed=crop_seed)
    elif mode == "inception_crop":
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4]), seed=crop_seed, area_range=INCEPTION_AREA,
            aspect_ratio_range=INCEPTION_ASPECT, min_object_covered=0.0,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = _to_uint8(tf.image.resize(image, (height, width), antialias=True))
    else:
        raise errors.UsageError(f"unknown view '{mode}'")
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
