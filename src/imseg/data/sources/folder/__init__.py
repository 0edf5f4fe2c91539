"""``imseg prepare folder``: any folder of images and masks → the prepared layout.

Lets users bring their own data without writing a source module::

    imseg prepare folder --images imgs/ --masks masks/ --out data/mine --size 256 256

**Inputs.** Images are png, jpg, bmp, tif, gif or webp files, RGB or gray,
read upright (EXIF orientation applied; 16-bit gray images above 255 are scaled
by their own maximum: :func:`imseg.data.imageio.read_image`); they are written as
RGB, or gray with ``--channels 1``. Hidden files (macOS ``._a.png``) are skipped.
Masks are matched to images by file stem (``a.jpg`` ↔ ``a.png``); when mask names
add a suffix (ISIC's ``a_segmentation.png``, Carvana's ``a_mask.gif``) and no
name matches as it is, the suffix they share is found (or ``--mask-suffix``
gives it). ``--val-images/--val-masks`` and ``--test-images/--test-masks`` give
fixed validation and test folders; ``--unlabeled`` adds images without masks to
``train_unlabeled``. ``--unlabeled`` may name the ``--images`` folder itself
(Pascal VOC: ``JPEGImages`` holds every image, ``SegmentationClass`` masks of a
few): its images without a mask are then the unlabeled ones.

**Split folders numbered alike.** Downloads often number each split from 0
(``train/images/0.jpg``, ``validation/images/0.jpg``). When a stem of the
``--val-*``, ``--test-*`` or ``--unlabeled`` folder also occurs in another
folder, every file of that folder gets a prefix in the prepared layout
(``val-0``, ``test-0``, ``unl-0``); the whole folder, so its files stay named
alike, and only then, so sets without clashes keep the names users know. The
``--images`` folder keeps its names (its split is seeded on them).
dataset.yaml's ``extra.renamed`` maps each prefixed stem to its source image.

**Leakage.** Names say nothing about content, so every image is compared by a
hash of its decoded pixels (and shape): an image equal to one in another
folder (train, unlabeled, val, test) is refused, naming both files. Equal
images within ``--images`` are kept together when it is split, so they never
land on both sides of a split.

**Mask formats and task inference** (``--task`` overrides the inference):

* ``--palette FILE``: RGB colour-coded masks, one colour per class
  (:mod:`imseg.data.palette` describes the file) → multiclass.
* single-channel masks whose values lie within {0, 1} or within {0, 255}
  → binary (one foreground value for the whole set);
* single-channel masks with more values → multiclass with class ids
  ``0..max`` (mode ``P`` PNGs give their palette indices);
* RGB masks without a palette → an error asking for ``--palette`` or
  ``--task multilabel``. An RGB mask whose three channels are equal is read
  as gray (except for multilabel).
* ``--task multilabel``: channel ``c`` of the mask is label ``c``, 0/1 or
  0/255; the label count is the channel count, or ``len(--classes)`` (an
  alpha channel is kept only when ``--classes`` names 4 labels).
* ``--mask-threshold T``: binary masks from gray values, foreground where the
  value is at least ``T`` (multilabel: per channel). ``T = 1`` turns instance
  label masks (one id per object, 16-bit too) into foreground/background. Masks
  that are all JPEG files are read so with ``T = 128`` unless a palette, a void
  value, a task other than binary or several classes are given: JPEG's
  compression leaves values near, not at, 0 and 255, which no class-id reading
  survives. Each must then look binary (grey, and at most 5 % of its pixels
  between 64 and 192); a colour or three-valued JPEG mask is an error asking for
  PNG masks or an explicit ``--mask-threshold``.

``--classes a,b,c`` names the classes (binary: the foreground class only;
without ``--task``, two or more names mean multiclass); else the palette's
names, else ``foreground`` / ``class0, class1, ...`` / ``label0, ...``.

**Void.** ``--ignore-index V`` marks source value ``V`` (e.g. 255, or CamVid's
11) as void: it is written as the task's void on disk and left out of losses
and metrics. For multiclass the classes are the values other than ``V`` in
order: when ``V`` lies inside the class range, the values above it move down by
one (``V=1`` with values 0..3 gives classes 0←0, 1←2, 2←3). With a palette,
``V`` is a palette index and that entry is dropped from the classes.

**Size.** ``--size H W`` resizes images bilinearly and masks by nearest
neighbour. Without it all images must share one size. The size must be a
multiple of 16 (the U-Net halves it four times). An image and its mask must
always have the same size (else the pairing is likely wrong).

**Tiles.** ``--tile`` cuts every image (scaled by ``--tile-scale``, default 1: its own
pixels) into ``--size`` tiles instead of resizing it whole, for images much larger than
the net's input whose detail resizing would lose (cells, membranes, aerial photos).
Training tiles overlap by ``--tile-overlap`` (0.25), val and test tiles as little as
covering the image allows (where they still overlap, a pixel is scored in the first tile
that holds it: :func:`imseg.data.tiles.first_cover`). The split is made
by source image, so the tiles of one image never lie on both sides. dataset.yaml's
``tile_scale`` tells ``predict`` to cut new images alike (:mod:`imseg.data.tiles`), and
``whole_image_scores`` scores the tiles of each image together, as the whole image.

**Splits.** From the pairs of ``--images``, first ``--test-fraction`` and
``--val-fraction`` of all pairs (0.1 each, or 0 when the matching folder is
given) go to test and val, then ``--labeled-fraction`` of the remaining pairs
goes to ``train_labeled`` and the rest to ``train_unlabeled``, whose masks are
written too as hidden truth for scoring pseudo labels, unless ``--unlabeled``
adds images without masks: then ``train_unlabeled`` has no masks at all, so
the split is either fully scored or not. Splits depend on the seed only, not
on file listing order.

**Safety.** Every input file is read and checked before anything is written;
the problems found (a missing partner, an unreadable file, wrong sizes or mask
values, leaked images, prepared names too long for the file system) are listed
together in one DataError naming the files (the first 20, then a count). When
most masks are binary ``0/fg`` and a few are not, those few are named; a void
value that is most masks' foreground is refused. A non-empty ``--out`` is
refused unless ``--overwrite`` (which replaces only the split folders and
dataset.yaml there). The new set is written beside the old one and swapped in
only when complete (:func:`imseg.data.layout.staged_layout`): a failure while
writing leaves ``--out`` as it was.

Where it lives: ``scan.py`` finds and reads the source files, ``masks.py`` reads mask
files, ``plan.py`` decides sizes, the mask plan and the splits, ``write.py`` writes the
set, ``prepare.py`` runs those steps, ``options.py`` and ``command.py`` are the command
line.
"""

from imseg.data.sources.folder.command import print_prepared, register
from imseg.data.sources.folder.masks import LOSSY_COLOUR_PIXELS, LOSSY_MASK_THRESHOLD, LOSSY_PLATEAU
from imseg.data.sources.folder.options import (
    DEFAULT_TILE_OVERLAP,
    add_layout_options,
    add_split_sources,
    layout_options,
)
from imseg.data.sources.folder.prepare import prepare_drawn, prepare_folder
from imseg.data.sources.folder.scan import mask_suffix_of, progress_bar

__all__ = [
    "DEFAULT_TILE_OVERLAP",
    "LOSSY_COLOUR_PIXELS",
    "LOSSY_MASK_THRESHOLD",
    "LOSSY_PLATEAU",
    "add_layout_options",
    "add_split_sources",
    "layout_options",
    "mask_suffix_of",
    "prepare_drawn",
    "prepare_folder",
    "print_prepared",
    "progress_bar",
    "register",
]
