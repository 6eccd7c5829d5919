"""MTCNN: a cascade of three small networks finds faces and their 5 landmarks.

1. **P-Net** slides over an image pyramid (each level ``factor`` times the last, the
   first scaled so that a ``min_face_size`` face spans P-Net's 12-pixel window) and
   proposes boxes where a face is likely;
2. **R-Net** rescores 24x24 crops of the proposals and corrects their boxes;
3. **O-Net** rescores 48x48 crops, corrects the boxes once more and places the landmarks.

Each stage keeps what scores above its threshold and merges overlapping boxes by
non-maximum suppression. A batch of photos of mixed sizes goes through together: each
photo gets its own pyramid, every level resized as if the photo were alone and padded to
one canvas per level, so what is found in a photo does not depend on the photos beside
it. Box arithmetic follows the pixel conventions the converted weights
were trained with (a box's width is ``x2 - x1 + 1``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aikd.detect.base import Detector, Face, register_detector
from aikd.detect.mtcnn_nets import load_nets

CHOICES = ("all", "largest", "central")
# NMS overlap limits: within one pyramid level, across levels, after R-Net, after O-Net ("min" overlap)
NMS_LEVEL, NMS_MERGED, NMS_REFINED, NMS_OUTPUT = 0.5, 0.7, 0.7, 0.7
# How much one network call takes in: a batch's whole pyramid level or thousands of crops at once spill the CPU's
# caches (a 16-photo 640x480 level makes 70 MB of P-Net features), so the nets run over slices of about this
# many level pixels (P-Net) or crops (R- and O-Net). Measured on 2 CPU threads: P-Net 14.9 -> 9.4 ms per photo,
# R-Net 12.9 -> 4.6 ms, each photo's outputs unchanged.
PNET_PIXELS, CROPS_PER_CALL = 1 << 18, 64


def in_slices(net: torch.nn.Module, x: torch.Tensor, rows: int) -> tuple[torch.Tensor, ...]:
    """``net(x)`` computed over slices of ``rows`` rows, each of its outputs put back together."""
    if len(x) <= rows:
        return net(x)
    parts = [net(x[i:i + rows]) for i in range(0, len(x), rows)]
    return tuple(torch.cat(out) for out in zip(*parts, strict=True))


def nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, limit: float,
        overlap: str = "union") -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, each group (photo) on its own.

    In every group the best box left is kept and every box of that group overlapping it by
    more than ``limit`` is dropped; then again with the best of the rest. All groups take
    their step together, so a batch of photos costs as many vectorised steps as the photo
    with the most faces kept, not as all photos' together. ``overlap`` is intersection
    over union, or over the smaller box ("min").
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    left = scores.argsort(descending=True)  # the boxes not yet kept or dropped, best first
    n_groups = int(groups.max()) + 1
    keep = []
    while len(left):
        group = groups[left]
        # each group's best box left: the first of its group in score order
        first = torch.full((n_groups,), len(left), device=boxes.device).scatter_reduce(
            0, group, torch.arange(len(left), device=boxes.device), reduce="amin")
        best = left[first[first < len(left)]]
        keep.append(best)
        rival = torch.full((n_groups,), -1, dtype=torch.long, device=boxes.device)
        rival[groups[best]] = best
        rival = rival[group]  # the kept box each box left is now compared with
        low = torch.maximum(boxes[left, :2], boxes[rival, :2])
        high = torch.minimum(boxes[left, 2:], boxes[rival, 2:])
        inter = (high - low + 1).clamp(min=0).prod(dim=1)
        denom = torch.minimum(area[left], area[rival]) if overlap == "min" else area[left] + area[rival] - inter
        left = left[inter / denom <= limit]  # a kept box overlaps itself fully: it leaves too
    return torch.cat(keep)


def corrected(boxes: torch.Tensor, reg: torch.Tensor, plus_one: bool = True) -> torch.Tensor:
    """Boxes moved by a network's correction (shares of their width and height)."""
    size = boxes[:, 2:4] - boxes[:, :2] + (1 if plus_one else 0)
    return torch.cat([boxes[:, :2] + reg[:, :2] * size, boxes[:, 2:4] + reg[:, 2:4] * size], dim=1)


def squared(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square around its centre, on its longer side (the networks see square crops)."""
    size = (boxes[:, 2:4] - boxes[:, :2]).max(dim=1).values
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    return torch.cat([centre - size[:, None] / 2, centre + size[:, None] / 2], dim=1)


def crops(canvas: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor, photo: torch.Tensor,
          side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``side`` x ``side`` crops of the boxes (clipped to their photo), normalised; and which boxes had any pixel."""
    ints = boxes.trunc().long()
    limits = sizes[photo]  # each box's photo's (h, w)
    x1, y1 = ints[:, 0].clamp(min=1), ints[:, 1].clamp(min=1)
    x2, y2 = torch.minimum(ints[:, 2], limits[:, 1]), torch.minimum(ints[:, 3], limits[:, 0])
    ok = ((x2 > x1 - 1) & (y2 > y1 - 1)).nonzero().flatten()
    if not len(ok):
        return canvas.new_zeros((0, 3, side, side)), ok
    # boxes of one size are resampled in one call (each box's pixels its own): a few hundred calls, not thousands
    cells = torch.stack([photo[ok], x1[ok], y1[ok], x2[ok], y2[ok]], dim=1).tolist()
    same: dict[tuple[int, int], list[int]] = {}
    for k, (_, left, top, right, bottom) in enumerate(cells):
        same.setdefault((bottom - top + 1, right - left + 1), []).append(k)
    out = canvas.new_empty((len(cells), 3, side, side))
    for rows in same.values():
        patches = torch.stack([canvas[i, :, top - 1:bottom, left - 1:right]
                               for i, left, top, right, bottom in (cells[k] for k in rows)])
        out[rows] = F.interpolate(patches, size=(side, side), mode="area")
    return _normalised(out), ok


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125  # the range the weights were trained on


@register_detector("mtcnn")
class MTCNN(Detector):
    """MTCNN cascade (P-, R-, O-Net), weights from the facenet-pytorch 2.6.0 wheel; boxes, scores, 5 landmarks."""

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, faces: str = "all", max_faces: int | None = None, device: str | None = None):
        if min_face_size < 12:
            raise ValueError(f"min_face_size {min_face_size}: at least 12 (P-Net's window)")
        if len(thresholds) != 3 or not all(0 < t < 1 for t in thresholds):
            raise ValueError(f"thresholds {thresholds}: three probabilities, one per network")
        if not 0.1 <= factor < 1:
            raise ValueError(f"factor {factor}: between 0.1 and 1 (the pyramid's step)")
        if faces not in CHOICES:
            raise ValueError(f"faces {faces!r}: one of {', '.join(CHOICES)}")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces {max_faces}: at least 1")
        from aikd.runtime import actor_device

        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor
        self.faces, self.max_faces = faces, max_faces
        self.device = torch.device(device) if device else actor_device()
        self.pnet, self.rnet, self.onet = load_nets(self.device)
        self.use_layout(torch.channels_last)

    def use_layout(self, layout: torch.memory_format) -> None:
        """The memory layout of the networks and what they are fed: channels-last (the default) lets the CPU's
        and the GPU's convolution kernels read each pixel's channels together."""
        self.layout = layout
        for net in (self.pnet, self.rnet, self.onet):
            net.to(memory_format=layout)

    @torch.no_grad()
    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        canvas, sizes = self._canvas(images)
        boxes, photo = self._propose(canvas, sizes)
        boxes, photo = self._refine(canvas, sizes, boxes, photo)
        boxes, scores, points, photo = self._output(canvas, sizes, boxes, photo)
        return [self._choose(boxes[photo == i], scores[photo == i], points[photo == i], sizes[i])
                for i in range(len(images))]

    def _canvas(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The photos on one zero-padded canvas (N, 3, H, W) float, and each photo's (h, w). It stays in torch's
        default layout: the pyramid's resizes and the crops' resamplings read it faster so (measured on a CPU);
        what goes into the networks is put in their layout."""
        sizes = torch.as_tensor([img.shape[:2] for img in images], device=self.device)
        canvas = torch.zeros((len(images), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max())), device=self.device)
        for i, img in enumerate(images):
            canvas[i, :, :img.shape[0], :img.shape[1]] = torch.as_tensor(np.ascontiguousarray(img)).permute(2, 0, 1)
        return canvas, sizes

    def _scales(self, shortest: int) -> list[float]:
        scale, side, scales = 12.0 / self.min_face_size, shortest * 12.0 / self.min_face_size, []
        while side >= 12:
            scales.append(scale)
            scale, side = scale * self.factor, side * self.factor
        return scales

    def _level(self, canvas: torch.Tensor, sizes: torch.Tensor, scale: float,
               photos: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pyramid level of ``photos``: each resized on its own, as if it were alone (so a photo's faces do
        not depend on the photos beside it in the batch), then padded to one canvas; and each one's level size.
        Photos of one size are resized in one call (on the contiguous canvas: 1.7x faster than one by one)."""
        shapes = torch.as_tensor([(int(sizes[i, 0] * scale + 1), int(sizes[i, 1] * scale + 1)) for i in photos],
                                 device=canvas.device)
        level = canvas.new_zeros((len(photos), 3, int(shapes[:, 0].max()), int(shapes[:, 1].max())))
        same: dict[tuple[int, int], list[int]] = {}
        for j, i in enumerate(photos):
            same.setdefault((int(sizes[i, 0]), int(sizes[i, 1])), []).append(j)
        for (h, w), rows in same.items():
            picked = [photos[j] for j in rows]
            run = picked == list(range(picked[0], picked[-1] + 1))  # a slice is a view: no copy of the photos
            source = canvas[picked[0]:picked[-1] + 1] if run else canvas[picked]
            sh, sw = int(shapes[rows[0], 0]), int(shapes[rows[0], 1])
            level[rows, :, :sh, :sw] = F.interpolate(source[:, :, :h, :w], size=(sh, sw), mode="area")
        return _normalised(level).contiguous(memory_format=self.layout), shapes

    def _propose(self, canvas: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over each photo's own pyramid: squared proposals (K, 4) and the photo of each."""
        levels = [len(self._scales(int(min(h, w)))) for h, w in sizes.tolist()]
        found, photos = [], []
        for k, scale in enumerate(self._scales(int(sizes.min(dim=1).values.max()))):
            present = [i for i, n in enumerate(levels) if n > k]
            level, shapes = self._level(canvas, sizes, scale, present)
            reg, prob = in_slices(self.pnet, level, max(1, PNET_PIXELS // (level.shape[2] * level.shape[3])))
            j, y, x = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            # only windows wholly on their photo: a photo alone has no others
            whole = (2 * x + 12 <= shapes[j, 1]) & (2 * y + 12 <= shapes[j, 0])
            j, y, x = j[whole], y[whole], x[whole]
            cell = torch.stack([x, y], dim=1).to(canvas.dtype)
            boxes = torch.cat([((2 * cell + 1) / scale).floor(), ((2 * cell + 12) / scale).floor()], dim=1)
            photo = torch.as_tensor(present, device=canvas.device)[j]
            keep = nms(boxes, prob[j, y, x], photo, NMS_LEVEL)
            found.append(torch.cat([boxes[keep], prob[j, y, x][keep, None], reg[j, :, y, x][keep]], dim=1))
            photos.append(photo[keep])
        if not found:
            return canvas.new_zeros((0, 4)), torch.zeros(0, dtype=torch.long, device=canvas.device)
        rows, photo = torch.cat(found), torch.cat(photos)
        keep = nms(rows[:, :4], rows[:, 4], photo, NMS_MERGED)
        rows, photo = rows[keep], photo[keep]
        return squared(corrected(rows[:, :4], rows[:, 5:9], plus_one=False)), photo

    def _refine(self, canvas, sizes, boxes, photo) -> tuple[torch.Tensor, torch.Tensor]:
        """R-Net on 24x24 crops: the proposals it keeps, corrected and squared."""
        patches, ok = crops(canvas, sizes, boxes, photo, 24)
        if not len(ok):
            return boxes[:0], photo[:0]
        reg, prob = in_slices(self.rnet, patches.contiguous(memory_format=self.layout), CROPS_PER_CALL)
        boxes, photo = boxes[ok], photo[ok]
        sure = prob > self.thresholds[1]
        boxes, photo, prob, reg = boxes[sure], photo[sure], prob[sure], reg[sure]
        keep = nms(boxes, prob, photo, NMS_REFINED)
        return squared(corrected(boxes[keep], reg[keep])), photo[keep]

    def _output(self, canvas, sizes, boxes, photo):
        """O-Net on 48x48 crops: final boxes, scores, landmarks (K, 5, 2) and photos."""
        patches, ok = crops(canvas, sizes, boxes, photo, 48)
        if not len(ok):
            return boxes[:0], boxes.new_zeros(0), boxes.new_zeros((0, 5, 2)), photo[:0]
        reg, marks, prob = in_slices(self.onet, patches.contiguous(memory_format=self.layout), CROPS_PER_CALL)
        boxes, photo = boxes[ok], photo[ok]
        sure = prob > self.thresholds[2]
        boxes, photo, prob, reg, marks = boxes[sure], photo[sure], prob[sure], reg[sure], marks[sure]
        size = boxes[:, 2:4] - boxes[:, :2] + 1
        points = torch.stack([size[:, None, 0] * marks[:, :5] + boxes[:, None, 0] - 1,
                              size[:, None, 1] * marks[:, 5:] + boxes[:, None, 1] - 1], dim=2)
        boxes = corrected(boxes, reg)
        keep = nms(boxes, prob, photo, NMS_OUTPUT, overlap="min")
        return boxes[keep], prob[keep], points[keep], photo[keep]

    def _choose(self, boxes, scores, points, size) -> list[Face]:
        """The faces kept of one photo (none smaller than ``min_face_size``), in order: largest first ("all"),
        the largest, or the most central."""
        h, w = float(size[0]), float(size[1])
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
        big = side >= self.min_face_size  # the pyramid starts there, yet finds somewhat smaller faces too
        boxes, scores, points = boxes[big], scores[big], points[big]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        if self.faces == "central":
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - boxes.new_tensor([w / 2, h / 2])
            order = (centre ** 2).sum(dim=1).argsort()[:1]
        else:
            order = area.argsort(descending=True)[:1 if self.faces == "largest" else self.max_faces]
        return [Face(index=k, box=boxes[i].cpu().numpy().astype(np.float32), score=float(scores[i]),
                     landmarks=points[i].cpu().numpy().astype(np.float32)) for k, i in enumerate(order.tolist())]
