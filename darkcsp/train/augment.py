"""Darknet's detection data augmentation (``load_data_detection`` with OpenCV), per sample.

Why reproduce it rather than use a generic pipeline: the cfg's ``jitter``, ``resize``,
``hue``/``saturation``/``exposure``, ``flip``, ``mosaic``, ``letter_box`` and ``random`` were tuned
for exactly these transforms, so the same numbers must mean the same thing here.

Implemented as in ``data.c``/``image_opencv.cpp``:

* jitter crop: each side moves by an integer in ``[-jitter*size, +jitter*size]`` (plus the
  ``resize`` range), the crop is filled with the image's per-channel mean outside the image,
  then resized to the network size with ``cv2.INTER_LINEAR``;
* ``letter_box=1`` widens the crop to the network's aspect ratio;
* horizontal flip (``flip=1``, probability 1/2);
* HSV in uint8 exactly as OpenCV does it there: ``H += 179*dhue`` (saturating), ``S *= dsat``,
  ``V *= dexp``, with ``dhue ~ U(-hue, hue)`` and ``dsat, dexp = rand_scale(...)`` (a factor in
  ``[1, s]`` or its inverse);
* boxes: ``correct_boxes`` (shift, scale, flip, clamp to the image) then the
  ``fill_truth_detection`` filters (shuffled, at most ``max`` boxes of the last ``[yolo]``,
  smaller than one network pixel or centred outside (0, 1] dropped);
* mosaic (``mosaic=1``): 4 independently augmented images, cut point in 20..80 % of each side,
  every second image pushed to its corner, ``blend_truth_mosaic`` box shifting/clipping
  (``mosaic_bound`` respected);
* multi-scale (``random`` of the last ``[yolo]``): a new size every 10 iterations,
  ``round(r*size/step + 1)*step`` with ``r = rand_scale(1.4 or random)``, the largest size in
  the first 10 and the last 100 iterations (``resize_step`` of ``[net]``).

* mixup (``mixup=1``, only without mosaic and cutmix, as Darknet's parser decides): two
  independently augmented images blended 0.5/0.5, boxes of both;
* ``blur`` (per image: none, the background only, or the whole image with the cfg's kernel,
  capped at 1/8 of the smallest box) and ``gaussian_noise`` (per image with probability 1/2;
  OpenCV's uint8 ``randn`` keeps only the positive half).

Simplified: Darknet draws "mosaic or not" (and "mixup or not") once per loaded batch, here
once per image (same 1/2 rate); the multi-scale blocks are counted from iteration 0 (so that a resumed run uses the
same sizes as an uninterrupted one, Darknet restarts its counter). Not implemented
(the trainer warns): ``track``/contrastive sequences, ``dynamic_minibatch``; ``cutmix`` alone is ignored for detectors, as Darknet does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from darkcsp.config.options import OptionValues
from darkcsp.data.darknet import DataError


class DarknetRandom:
    """Darknet's random helpers (``random_float``, ``rand_scale``, ...) over a numpy
    generator, so a sample is a pure function of its seed."""

    def __init__(self, seed: int | list[int] | np.random.Generator) -> None:
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def random_float(self) -> float:
        return float(self.rng.random())

    def coin(self) -> bool:
        """``random_gen() % 2``."""
        return bool(self.rng.integers(2))

    def uniform(self, lo: float, hi: float) -> float:
        """``rand_uniform_strong``: bounds in either order."""
        lo, hi = min(lo, hi), max(lo, hi)
        return self.random_float() * (hi - lo) + lo

    def rand_scale(self, s: float) -> float:
        """A factor in [1, s] or its inverse, each with probability 1/2."""
        scale = self.uniform(1, s)
        return scale if self.coin() else 1.0 / scale

    def rand_int(self, lo: int, hi: int) -> int:
        lo, hi = min(lo, hi), max(lo, hi)
        return int(self.rng.integers(lo, hi + 1))


def precalc(lo: float, hi: float, r: float) -> float:
    """``rand_precalc_random``: ``r`` in [0, 1] mapped onto [lo, hi] (bounds in either order)."""
    lo, hi = min(lo, hi), max(lo, hi)
    return r * (hi - lo) + lo


def c_int(x: float) -> int:
    """C's float -> int conversion (truncation toward zero)."""
    return int(x)


@dataclass(frozen=True)
class AugmentParams:
    """The cfg values that drive augmentation: ``[net]`` colour/flip/mosaic/letterbox and the
    last ``[yolo]``'s jitter/resize/random/max (Darknet takes them from the last head)."""

    jitter: float = 0.2
    resize: float = 1.0
    flip: bool = True
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    mosaic: bool = False
    mixup: bool = False
    blur: int = 0
    gaussian_noise: int = 0
    mosaic_bound: bool = False
    letter_box: bool = False
    max_boxes: int = 200
    random: float = 0.0
    resize_step: int = 32
    channels: int = 3

    @classmethod
    def from_cfg(cls, net: OptionValues, head_opts: OptionValues | None) -> "AugmentParams":
        h = head_opts or {}
        return cls(jitter=float(h.get("jitter", 0.2)), resize=float(h.get("resize", 1.0)),
                   flip=bool(net.flip), hue=float(net.hue), saturation=float(net.saturation),
                   exposure=float(net.exposure), mosaic=bool(net.mosaic),
                   mixup=bool(net.mixup) and not net.mosaic and not net.cutmix,
                   blur=int(net.blur), gaussian_noise=int(net.gaussian_noise),
                   mosaic_bound=bool(net.mosaic_bound), letter_box=bool(net.letter_box),
                   max_boxes=int(h.get("max", 200)), random=float(h.get("random", 0.0)),
                   resize_step=int(net.resize_step) or 32, channels=int(net.channels))

    def without_augmentation(self) -> "AugmentParams":
        """Only the resize (for a loss check on clean images)."""
        return AugmentParams(jitter=0.0, resize=1.0, flip=False, max_boxes=self.max_boxes,
                             resize_step=self.resize_step, channels=self.channels,
                             letter_box=self.letter_box)


@dataclass
class Augmented:
    """One augmented image (uint8, net size) with its boxes (k, 5): x, y, w, h, class."""

    image: np.ndarray
    truth: np.ndarray
    pleft: int
    pright: int
    ptop: int
    pbot: int
    flip: bool
    ow: int
    oh: int


def hsv_adjust(img: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """OpenCV uint8 HSV shift as Darknet does it (saturating adds/multiplies, H wraps mod 180 in
    the conversion back)."""
    if dsat == 1 and dexp == 1 and dhue == 0:
        return img
    if img.shape[2] < 3:
        return np.clip(np.rint(img.astype(np.float32) * dexp), 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= dsat
    hsv[..., 2] *= dexp
    hsv[..., 0] += 179 * dhue
    hsv = np.clip(np.rint(hsv), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def correct_boxes(labels: np.ndarray, dx: float, dy: float, sx: float, sy: float,
                  flip: bool) -> np.ndarray:
    """Darknet's ``correct_boxes`` on (k, 5) class,x,y,w,h rows; returns x,y,w,h,class rows,
    invalid boxes marked with x = 999999."""
    out = np.zeros((len(labels), 5), dtype=np.float32)
    if not len(labels):
        return out
    cls, x, y, w, h = (labels[:, i].astype(np.float32) for i in range(5))
    invalid = ((x == 0) & (y == 0)) | (x + w / 2 < 0) | (y + h / 2 < 0) | (x - w / 2 > 1) \
        | (y - h / 2 > 1)
    left, right = (x - w / 2) * sx - dx, (x + w / 2) * sx - dx
    top, bot = (y - h / 2) * sy - dy, (y + h / 2) * sy - dy
    if flip:
        left, right = 1 - right, 1 - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bot = np.clip(top, 0, 1), np.clip(bot, 0, 1)
    out[:, 0] = (left + right) / 2
    out[:, 1] = (top + bot) / 2
    out[:, 2] = np.clip(right - left, 0, 1)
    out[:, 3] = np.clip(bot - top, 0, 1)
    out[:, 4] = cls
    out[invalid, :4] = 999999
    return out


def fill_truth(labels: np.ndarray, dx: float, dy: float, sx: float, sy: float, flip: bool,
               net_w: int, net_h: int, max_boxes: int, rng: DarknetRandom) -> np.ndarray:
    """``fill_truth_detection`` minus the file reading: shuffle, correct, cap at ``max_boxes``,
    drop boxes under one network pixel or centred outside (0, 1]."""
    if len(labels) > 1:
        labels = labels.copy()
        n = len(labels)
        for i in range(n):  # randomize_boxes: swap each with a random one
            j = int(rng.rng.integers(n))
            labels[[i, j]] = labels[[j, i]]
    boxes = correct_boxes(labels, dx, dy, sx, sy, flip)[:max_boxes]
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    keep = (w >= 1.0 / net_w) & (h >= 1.0 / net_h) & (x != 999999) & (x > 0) & (x <= 1) \
        & (y > 0) & (y <= 1)
    boxes = boxes[keep]
    boxes[:, 2:4] = np.minimum(boxes[:, 2:4], 1)
    return boxes


def crop_resize(img: np.ndarray, pleft: int, ptop: int, swidth: int, sheight: int, w: int,
                h: int) -> np.ndarray:
    """Crop (pleft, ptop, swidth, sheight), outside filled with the image mean, resized to
    (w, h) with INTER_LINEAR, as ``image_data_augmentation``."""
    oh, ow = img.shape[:2]
    if pleft == 0 and ptop == 0 and swidth == ow and sheight == oh:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    mean = np.rint(img.reshape(-1, img.shape[2]).mean(axis=0))
    cropped = np.empty((sheight, swidth, img.shape[2]), dtype=np.uint8)
    cropped[:] = np.clip(mean, 0, 255).astype(np.uint8)
    x0, y0 = max(pleft, 0), max(ptop, 0)
    x1, y1 = min(pleft + swidth, ow), min(ptop + sheight, oh)
    if x1 > x0 and y1 > y0:
        dx, dy = max(0, -pleft), max(0, -ptop)
        cropped[dy:dy + y1 - y0, dx:dx + x1 - x0] = img[y0:y1, x0:x1]
    out = cv2.resize(cropped, (w, h), interpolation=cv2.INTER_LINEAR)
    return out if out.ndim == 3 else out[..., None]


def augment_one(img: np.ndarray, labels: np.ndarray, w: int, h: int, p: AugmentParams,
                rng: DarknetRandom, mosaic_part: int | None = None) -> Augmented:
    """One image through Darknet's jitter crop, flip and HSV; ``mosaic_part`` (0..3) when it is
    one quarter of a mosaic (it may then be pushed to its corner)."""
    oh, ow = img.shape[:2]
    dw, dh = c_int(ow * p.jitter), c_int(oh * p.jitter)
    resize_down, resize_up = p.resize, p.resize
    if resize_down > 1.0:
        resize_down = 1 / resize_down
    min_rdw = c_int(ow * (1 - (1 / resize_down)) / 2)
    min_rdh = c_int(oh * (1 - (1 / resize_down)) / 2)
    if resize_up < 1.0:
        resize_up = 1 / resize_up
    max_rdw = c_int(ow * (1 - (1 / resize_up)) / 2)
    max_rdh = c_int(oh * (1 - (1 / resize_up)) / 2)

    resize_r1, resize_r2 = rng.random_float(), rng.random_float()
    r1, r2, r3, r4 = (rng.random_float() for _ in range(4))
    flip = rng.coin() if p.flip else False
    dhue = rng.uniform(-p.hue, p.hue)
    dsat = rng.rand_scale(p.saturation)
    dexp = rng.rand_scale(p.exposure)
    blur = 0
    if p.blur:  # 0: none, 1: the background only, 2: the cfg's blur
        blur = (0, 1, p.blur)[rng.rand_int(0, 2)]
    noise = p.gaussian_noise if p.gaussian_noise and rng.rand_int(0, 1) == 1 else 0

    pleft = c_int(precalc(-dw, dw, r1))
    pright = c_int(precalc(-dw, dw, r2))
    ptop = c_int(precalc(-dh, dh, r3))
    pbot = c_int(precalc(-dh, dh, r4))
    if p.resize < 1:
        pleft += c_int(precalc(min_rdw, 0, resize_r1))
        pright += c_int(precalc(min_rdw, 0, resize_r2))
        ptop += c_int(precalc(min_rdh, 0, resize_r1))
        pbot += c_int(precalc(min_rdh, 0, resize_r2))
    else:
        pleft += c_int(precalc(min_rdw, max_rdw, resize_r1))
        pright += c_int(precalc(min_rdw, max_rdw, resize_r2))
        ptop += c_int(precalc(min_rdh, max_rdh, resize_r1))
        pbot += c_int(precalc(min_rdh, max_rdh, resize_r2))

    if p.letter_box:
        net_ar = w / h
        if (ow / oh) / net_ar > 1:
            delta_h = (ow / net_ar - oh) / 2
            ptop, pbot = c_int(ptop - delta_h), c_int(pbot - delta_h)
        else:
            delta_w = (oh * net_ar - ow) / 2
            pleft, pright = c_int(pleft - delta_w), c_int(pright - delta_w)

    if mosaic_part is not None and rng.coin():  # push every 2nd image into its corner
        part = mosaic_part if not flip else (1, 0, 3, 2)[mosaic_part]
        if part in (0, 2):
            pright, pleft = pright + pleft, 0
        else:
            pleft, pright = pleft + pright, 0
        if part in (0, 1):
            pbot, ptop = pbot + ptop, 0
        else:
            ptop, pbot = ptop + pbot, 0

    swidth, sheight = ow - pleft - pright, oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:
        swidth, sheight, pleft, ptop = ow, oh, 0, 0  # Darknet's "invalid resize" reset
    sx, sy = swidth / ow, sheight / oh
    dx, dy = (pleft / ow) / sx, (ptop / oh) / sy
    truth = fill_truth(labels, dx, dy, 1.0 / sx, 1.0 / sy, flip, w, h, p.max_boxes, rng)

    sized = crop_resize(img, pleft, ptop, swidth, sheight, w, h)
    if flip:
        sized = np.ascontiguousarray(sized[:, ::-1])
    sized = hsv_adjust(sized, dhue, dsat, dexp)
    if blur > 1 and len(truth):  # no blur that would wipe out the smallest object
        blur = min(blur, int(min(truth[:, 2].min() * w, truth[:, 3].min() * h)) // 8)
    elif blur > 1:
        blur = 0
    if blur:
        sized = blur_image(sized, truth, blur)
    if noise:
        sized = add_gaussian_noise(sized, noise, rng)
    return Augmented(sized, truth, pleft, pright, ptop, pbot, flip, ow, oh)


def blur_image(img: np.ndarray, truth: np.ndarray, blur: int) -> np.ndarray:
    """Darknet's ``blur``: 1 blurs the background (17x17 Gaussian) and keeps every truth box
    sharp; n > 1 blurs the whole image with a (n/2*2+1)-pixel kernel."""
    ksize = 17 if blur == 1 else (blur // 2) * 2 + 1
    out = cv2.GaussianBlur(img, (ksize, ksize), 0)
    out = out if out.ndim == 3 else out[..., None]
    if blur == 1:
        h, w = img.shape[:2]
        for x, y, bw, bh in truth[:, :4].astype(np.float64):
            left, top = c_int((x - bw / 2) * w), c_int((y - bh / 2) * h)
            x0, y0 = max(left, 0), max(top, 0)
            x1, y1 = min(left + c_int(bw * w), w), min(top + c_int(bh * h), h)
            if x1 > x0 and y1 > y0:
                out[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    return out


def add_gaussian_noise(img: np.ndarray, sigma: int, rng: DarknetRandom) -> np.ndarray:
    """Darknet's ``gaussian_noise``: ``cv::randn`` into a uint8 image saturates the negative
    half to 0, so the noise only brightens; added with saturation."""
    sigma = min(max(sigma, 0), 127)
    noise = np.clip(np.rint(rng.rng.normal(0.0, sigma, img.shape)), 0, 255)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def mosaic(parts: list[Augmented], w: int, h: int, cut_x: int, cut_y: int,
           p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Four augmented images into one (``use_mixup == 3``), boxes shifted and clipped by
    ``blend_truth_mosaic``."""
    out = np.zeros_like(parts[0].image)
    boxes: list[np.ndarray] = []
    lowest_w, lowest_h = 1.0 / w, 1.0 / h
    for k, part in enumerate(parts):
        pleft, pright = (part.pright, part.pleft) if part.flip else (part.pleft, part.pright)
        ptop, pbot = part.ptop, part.pbot
        left_shift = min(cut_x, max(0, c_int(-pleft * w / part.ow)))
        top_shift = min(cut_y, max(0, c_int(-ptop * h / part.oh)))
        right_shift = min(w - cut_x, max(0, c_int(-pright * w / part.ow)))
        bot_shift = min(h - cut_y, max(0, c_int(-pbot * h / part.oh)))
        ai = part.image
        if k == 0:
            out[:cut_y, :cut_x] = ai[h - cut_y - bot_shift:h - bot_shift,
                                     w - cut_x - right_shift:w - right_shift]
        elif k == 1:
            out[:cut_y, cut_x:] = ai[h - cut_y - bot_shift:h - bot_shift,
                                     left_shift:left_shift + w - cut_x]
        elif k == 2:
            out[cut_y:, :cut_x] = ai[top_shift:top_shift + h - cut_y,
                                     w - cut_x - right_shift:w - right_shift]
        else:
            out[cut_y:, cut_x:] = ai[top_shift:top_shift + h - cut_y,
                                     left_shift:left_shift + w - cut_x]
        for xb, yb, wb, hb, cls in part.truth.astype(np.float64):
            if k in (0, 2):
                xb -= (w - cut_x - right_shift) / w
            else:
                xb += (cut_x - left_shift) / w
            if k in (0, 1):
                yb -= (h - cut_y - bot_shift) / h
            else:
                yb += (cut_y - top_shift) / h
            left, right = c_int((xb - wb / 2) * w), c_int((xb + wb / 2) * w)
            top, bot = c_int((yb - hb / 2) * h), c_int((yb + hb / 2) * h)
            if p.mosaic_bound:
                lb, rb = (0, cut_x) if k in (0, 2) else (cut_x, w)
                tb, bb = (0, cut_y) if k in (0, 1) else (cut_y, h)
                left, right = max(left, lb), min(right, rb)
                top, bot = max(top, tb), min(bot, bb)
                xb, wb = (right + left) / 2 / w, (right - left) / w
                yb, hb = (bot + top) / 2 / h, (bot - top) / h
            else:
                if left < 0:
                    xb, wb = xb - left / w / 2, wb + left / w
                if right > w:
                    diff = (right - w) / w
                    xb, wb = xb - diff / 2, wb - diff
                if top < 0:
                    yb, hb = yb - top / h / 2, hb + top / h
                if bot > h:
                    diff = (bot - h) / h
                    yb, hb = yb - diff / 2, hb - diff
                left, right = c_int((xb - wb / 2) * w), c_int((xb + wb / 2) * w)
                top, bot = c_int((yb - hb / 2) * h), c_int((yb + hb / 2) * h)
            if (left >= 0 and right <= w and top >= 0 and bot <= h and 0 < wb < 1 and 0 < hb < 1
                    and 0 < xb < 1 and 0 < yb < 1 and wb > lowest_w and hb > lowest_h):
                boxes.append(np.array([xb, yb, wb, hb, cls], dtype=np.float32))
    truth = np.stack(boxes)[:p.max_boxes] if boxes else np.zeros((0, 5), dtype=np.float32)
    return out, truth


def mixup(first: Augmented, second: Augmented, p: AugmentParams
          ) -> tuple[torch.Tensor, np.ndarray]:
    """Darknet's ``mixup=1`` (``use_mixup == 1``): the two independently augmented images
    blended 0.5/0.5 in float (``blend_images_cv``), the second's boxes appended after the
    first's up to ``max`` (``blend_truth``)."""
    image = (to_tensor(first.image) + to_tensor(second.image)) * 0.5
    truth = np.concatenate([first.truth, second.truth])[:p.max_boxes]
    return image, truth


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255)


def match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """RGB -> gray for 1-channel networks (Darknet loads with flag 0 then)."""
    if channels == 1 and img.shape[2] != 1:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    return img


def training_sample(load, index: int, count: int, w: int, h: int, p: AugmentParams,
                    seed: list[int]) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The image tensor (C, h, w) and truth rows (x, y, w, h, class) for stream sample
    ``seed``; ``load(i)`` gives (uint8 RGB image or None, labels, name) of dataset image
    ``i`` and ``count`` is the dataset size (mosaic draws 3 more images)."""
    rng = DarknetRandom(seed)
    bad: list[str] = []

    def fetch(i: int) -> tuple[np.ndarray, np.ndarray]:
        for attempt in range(16):  # an unreadable image is replaced by the next readable one
            j = (i + attempt * 7919) % count if attempt else i
            img, labels, name = load(j)
            if img is not None:
                return match_channels(img, p.channels), labels
            bad.append(name)
        raise DataError(f"16 images in a row could not be read (last: {bad[-1]}); check the "
                           "dataset")

    use_mosaic = p.mosaic and rng.coin()
    if not use_mosaic:
        img, labels = fetch(index)
        aug = augment_one(img, labels, w, h, p, rng)
        if p.mixup and rng.coin():
            return (*mixup(aug, augment_one(*fetch(int(rng.rng.integers(count))), w, h, p, rng),
                           p), bad)
        return to_tensor(aug.image), aug.truth, bad
    cut_x = rng.rand_int(c_int(w * 0.2), c_int(w * 0.8))
    cut_y = rng.rand_int(c_int(h * 0.2), c_int(h * 0.8))
    parts = []
    for k in range(4):
        i = index if k == 0 else int(rng.rng.integers(count))
        img, labels = fetch(i)
        parts.append(augment_one(img, labels, w, h, p, rng, mosaic_part=k))
    image, truth = mosaic(parts, w, h, cut_x, cut_y, p)
    return to_tensor(image), truth, bad


def darknet_round(x: float) -> int:
    """C's ``roundl``: halves away from zero."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def multiscale_size(iteration: int, max_batches: int, width: int, height: int, random: float,
                    step: int, seed: int) -> tuple[int, int]:
    """The network size used at ``iteration`` with ``random`` of the last ``[yolo]`` (Darknet
    draws a new one every 10 iterations)."""
    if not random:
        return width, height
    block_start = iteration - iteration % 10
    coef = 1.4 if random == 1.0 else random
    rng = DarknetRandom([seed, 0x5CA1E, block_start])
    r = rng.rand_scale(coef)
    dim_w = darknet_round(r * width / step + 1) * step
    dim_h = darknet_round(r * height / step + 1) * step
    if r < 1 and (dim_w > width or dim_h > height):
        dim_w, dim_h = width, height
    max_w = darknet_round(coef * width / step + 1) * step
    max_h = darknet_round(coef * height / step + 1) * step
    if block_start == 0 or block_start > max_batches - 100:
        dim_w, dim_h = max_w, max_h
    return max(dim_w, step), max(dim_h, step)
