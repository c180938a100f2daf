"""Any picture of a digit made to look like MNIST, in the graph: one preparation for all.

The exported SavedModel carries these operations in its `from_image` signature, so the
drawing page, `graph_mnist.predict`, any REST client and a real TensorFlow Serving all
prepare a picture the same way, the way MNIST itself was made:

    PNG or JPEG bytes
      -> grayscale [H, W] in [0, 1]; transparent areas are paper (white)
      -> dark ink on light paper (median > 0.5) is inverted: a light digit on black
      -> the paper's shade (the median) becomes 0; blank pictures are refused
      -> ink below 20% of the brightest pixel is paper grain, not ink
      -> cropped to its ink, scaled to fit 20x20 keeping its proportions (Lanczos)
      -> placed in 28x28 with its centre of mass at the centre
    = [28, 28, 1] float32, a white digit on black, as the networks were trained on

Pictures are checked before they are decoded: only PNG and JPEG, at most MAX_PIXELS
(the size is read from the header, so a decompression bomb is refused unopened).
A refused picture fails the whole call with an InvalidArgumentError whose message says
why ("assertion failed: [no digit found: the picture is blank]").
"""

import re

import tensorflow as tf

MAX_PIXELS = 25_000_000  # a 12-megapixel phone photo passes; 5000x5000 is the limit

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

# The messages a refused picture fails with (InvalidArgumentError "assertion failed: [..]")
NOT_AN_IMAGE = 'not a PNG or JPEG image'
TOO_LARGE = f'the picture has more than {MAX_PIXELS:,} pixels'
BLANK = 'no digit found: the picture is blank'


def _big_endian(data, start, length):
    """The unsigned big-endian integer in bytes [start, start + length) of `data`."""
    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8),
                     tf.int64)
    return tf.reduce_sum(digits * (256 ** tf.range(length - 1, -1, -1, dtype=tf.int64)))


def _pixels_in_header(data):
    """Width x height as a PNG or JPEG header declares it, before anything is decoded;
    -1 for anything else."""
    padded = data + b'\0' * 32  # a short file reads as zeros, never out of range

    def png():  # IHDR: width at bytes 16-19, height at 20-23
        return _big_endian(padded, 16, 4) * _big_endian(padded, 20, 4)

    def jpeg():
        shape = tf.io.extract_jpeg_shape(data, output_type=tf.int64)
        return shape[0] * shape[1]
    return tf.case([(tf.equal(tf.strings.substr(padded, 0, 8), PNG_SIGNATURE), png),
                    (tf.io.is_jpeg(data), jpeg)],
                   default=lambda: tf.constant(-1, tf.int64), exclusive=False)


def refuse(message, shape, dtype):
    """A branch that fails with `message` (InvalidArgumentError "assertion failed")."""
    def branch():
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.zeros(shape, dtype)
    return branch


def _median(gray):
    """Median of uint8 pixels from their histogram (sorting millions would be slow)."""
    counts = tf.math.bincount(tf.cast(tf.reshape(gray, [-1]), tf.int32), minlength=256,
                              maxlength=256)
    half = (tf.size(gray) + 1) // 2
    return tf.cast(tf.argmax(tf.cast(tf.cumsum(counts) >= half, tf.int32)), tf.float32) / 255


def _grayscale(data):
    """Decoded picture as uint8 [H, W]; alpha composited onto white paper."""
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    pixels = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]

    def on_white(colour, alpha):
        return colour * alpha / 255 + 255 * (1 - alpha / 255)

    gray = tf.switch_case(channels - 1, [
        lambda: pixels[..., 0],
        lambda: on_white(pixels[..., 0], pixels[..., 1]),
        lambda: tf.image.rgb_to_grayscale(pixels[..., :3])[..., 0],
        lambda: on_white(tf.image.rgb_to_grayscale(pixels[..., :3])[..., 0],
                         pixels[..., 3]),
    ])
    return tf.cast(tf.round(gray), tf.uint8)


def mnist_like(data):
    """One encoded picture (scalar string) -> float32 [28, 28, 1], a digit as in MNIST."""
    # the checks are branches the data flows through, so nothing is decoded before them
    pixels = _pixels_in_header(data)
    gray = tf.case([(pixels < 0, refuse(NOT_AN_IMAGE, [1, 1], tf.uint8)),
                    (pixels > MAX_PIXELS, refuse(TOO_LARGE, [1, 1], tf.uint8))],
                   default=lambda: _grayscale(data), exclusive=False)

    median = _median(gray)
    light_paper = median > 0.5
    image = tf.cast(gray, tf.float32) / 255
    image = tf.where(light_paper, 1 - image, image)     # a light digit on black
    image = image - tf.where(light_paper, 1 - median, median)  # the paper becomes 0
    peak = tf.reduce_max(image)
    ink = tf.cond(peak >= 0.1, lambda: tf.clip_by_value(image / peak, 0, 1),
                  refuse(BLANK, tf.shape(image), tf.float32))
    ink = tf.where(ink < 0.2, tf.zeros_like(ink), ink)  # grain and shadows are not ink

    rows = tf.where(tf.reduce_any(ink > 0, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(ink > 0, axis=0))[:, 0]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = tf.cast(tf.shape(ink)[0], tf.float32), tf.cast(tf.shape(ink)[1], tf.float32)
    scale = 20.0 / tf.maximum(height, width)
    size = tf.cast(tf.maximum(1.0, tf.round(tf.stack([height, width]) * scale)), tf.int32)
    small = tf.image.resize(ink[..., None], size, method='lanczos3', antialias=True)[..., 0]
    small = tf.clip_by_value(small, 0, 1)

    mass = tf.maximum(tf.reduce_sum(small), 1e-6)
    ys = tf.cast(tf.range(size[0]), tf.float32)[:, None]
    xs = tf.cast(tf.range(size[1]), tf.float32)[None, :]
    cy, cx = tf.reduce_sum(ys * small) / mass, tf.reduce_sum(xs * small) / mass
    top = tf.clip_by_value(tf.cast(tf.round(14 - cy), tf.int32), 0, 28 - size[0])
    left = tf.clip_by_value(tf.cast(tf.round(14 - cx), tf.int32), 0, 28 - size[1])
    out = tf.pad(small, [[top, 28 - size[0] - top], [left, 28 - size[1] - left]])
    return tf.reshape(out, [28, 28, 1])


def mnist_like_batch(images):
    """Encoded pictures, string [N] -> float32 [N, 28, 28, 1]."""
    return tf.map_fn(mnist_like, images, fn_output_signature=tf.TensorSpec([28, 28, 1],
                                                                           tf.float32))


def reason(error):
    """The readable part of the InvalidArgumentError a refused input raised, without
    TensorFlow's node names and stack notes: 'no digit found: the picture is blank'."""
    text = str(getattr(error, 'message', error))
    noise = ('Graph execution error:', 'Detected at node', '<stack traces unavailable>',
             '[[', '(most recent call last)')
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(noise)]
    text = ' '.join(lines) or type(error).__name__
    text = re.sub(r'\s*\[\[\{\{.*$|\s*\[Op:\S*\]$', '', text)
    found = re.search(r'assertion failed: \[(.*)\]', text)
    return found.group(1) if found else text
