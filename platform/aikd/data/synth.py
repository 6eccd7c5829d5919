"""Synthetic faces: the data of the embedded default and of the tests.

No real face set can be downloaded here, so the generator has to be useful for both
face recognition and quality:

* identities differ in stable traits: face geometry (landmark layout, face shape),
  skin/hair/eye tones, eyebrows, and a per-identity texture field with marks;
* samples of one identity vary in pose (yaw/pitch shift the inner features),
  expression (mouth, eyes), illumination (direction, gain) and background;
* each face is drawn in a canonical frame, then placed on a larger canvas by a random
  similarity transform (not centred, rolled, scaled), so landmarks are exact: they are
  the canonical feature centres pushed through the same transform;
* a recorded share of samples carry one graded degradation (blur, noise, low
  resolution, JPEG, occlusion, contrast) whose kind and severity are stored.

Every image depends only on (seed, identity, sample): generation is deterministic and
can be split across processes without changing a pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from aikd.data.schema import BBOX, IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID, with_columns
from aikd.data.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter, write_summary

DEGRADATIONS = ("blur", "noise", "lowres", "jpeg", "occlusion", "contrast")
SYNTH_SCHEMA = with_columns(
    pa.field("degradation", pa.string(), nullable=False),
    pa.field("severity", pa.float32(), nullable=False),
)

_C = 128  # side of the canonical frame the face is drawn in
_NOISE_BANK = 512  # side of a shared gaussian noise tile; samples take random windows


@dataclass(frozen=True)
class SynthConfig:
    identities: int = 200
    samples_per_identity: int = 10
    seed: int = 0
    min_canvas: int = 160
    max_canvas: int = 250
    degraded_share: float = 0.4
    max_roll_deg: float = 30.0
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.identities < 1 or self.samples_per_identity < 1:
            raise ValueError("identities and samples_per_identity must be >= 1")
        if not 0.0 <= self.degraded_share <= 1.0:
            raise ValueError(f"degraded_share must be in [0, 1], got {self.degraded_share}")
        if not 64 <= self.min_canvas <= self.max_canvas:
            raise ValueError(f"need 64 <= min_canvas <= max_canvas, got {self.min_canvas}, {self.max_canvas}")

    @property
    def total(self) -> int:
        return self.identities * self.samples_per_identity


@dataclass(frozen=True)
class Identity:
    """Stable traits of one synthetic person (canonical-frame pixels, BGR tones)."""

    eye_dx: float
    eye_y: float
    nose_y: float
    mouth_y: float
    mouth_w: float
    face_w: float
    face_h: float
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    hairline: float
    brow_thickness: int
    brow_tilt: float
    texture: np.ndarray  # (_C, _C) float32 field, identity's "skin pattern"


@dataclass
class Sample:
    image: np.ndarray  # uint8 BGR canvas
    landmarks: np.ndarray  # (5, 2) float32 canvas pixels
    bbox: np.ndarray  # (4,) float32 x1, y1, x2, y2
    degradation: str
    severity: float
    jpeg_quality: int


def make_identity(seed: int, identity: int) -> Identity:
    rng = np.random.default_rng([seed, identity, 0xFACE])
    # skin as cameras see it, from dark to light: red above green above blue. Tones drawn per channel
    # (blue-green faces among them) left a third of the clean faces to a real detector's misses.
    red = 95.0 + 145.0 * rng.uniform(0.0, 1.0)
    green = red * rng.uniform(0.66, 0.80)
    skin = np.array([green * rng.uniform(0.70, 0.88), green, red], np.float32)  # BGR
    low = rng.normal(0.0, 1.0, (6, 6)).astype(np.float32)
    texture = cv2.resize(low, (_C, _C), interpolation=cv2.INTER_CUBIC) * 22.0
    for _ in range(int(rng.integers(2, 6))):  # marks: moles, scars at stable places
        cx, cy = rng.uniform(35, 93), rng.uniform(40, 105)
        cv2.circle(texture, (int(cx), int(cy)), int(rng.integers(1, 4)), float(rng.uniform(-90, -50)), -1)
    return Identity(
        eye_dx=float(rng.uniform(14.0, 21.0)),
        eye_y=float(rng.uniform(50.0, 60.0)),
        nose_y=float(rng.uniform(17.0, 25.0)),
        mouth_y=float(rng.uniform(15.0, 23.0)),
        mouth_w=float(rng.uniform(10.0, 17.0)),
        face_w=float(rng.uniform(36.0, 46.0)),
        face_h=float(rng.uniform(46.0, 58.0)),
        skin=skin,
        hair=rng.uniform(10, 160, 3).astype(np.float32),
        iris=rng.uniform(20, 150, 3).astype(np.float32),
        hairline=float(rng.uniform(12.0, 30.0)),
        brow_thickness=int(rng.integers(1, 5)),
        brow_tilt=float(rng.uniform(-4.0, 4.0)),
        texture=texture,
    )


def _noise_bank(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0xB0B]).normal(0.0, 1.0, (_NOISE_BANK, _NOISE_BANK, 1)).astype(np.float32)


def _noise_window(bank: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    # Tile the bank when the window is larger, then take a random window: fresh-looking
    # noise at the cost of an index, instead of drawing h*w normals per image.
    reps = (-(-h // bank.shape[0]) + 1, -(-w // bank.shape[1]) + 1, 1)
    big = np.tile(bank, reps) if reps[0] > 2 or reps[1] > 2 else bank
    y = int(rng.integers(0, big.shape[0] - h + 1))
    x = int(rng.integers(0, big.shape[1] - w + 1))
    return big[y : y + h, x : x + w]


def _canonical_face(ident: Identity, rng: np.random.Generator, bg: np.ndarray):
    """Draw the face in the canonical frame; return image, 5 landmarks and face ellipse."""
    cx = _C / 2
    yaw = rng.uniform(-0.22, 0.22)  # shifts inner features sideways, narrows one side
    pitch = rng.uniform(-4.0, 4.0)
    ex = cx + yaw * 22.0
    eye_y = ident.eye_y + pitch
    nose = (cx + yaw * 34.0, eye_y + ident.nose_y)
    mouth_y = nose[1] + ident.mouth_y + rng.uniform(-1.5, 1.5)
    smile = rng.uniform(-2.0, 3.0)
    mouth_w = ident.mouth_w * rng.uniform(0.9, 1.15)
    lm = np.array(
        [
            [ex - ident.eye_dx * (1 + yaw * 0.5), eye_y],
            [ex + ident.eye_dx * (1 - yaw * 0.5), eye_y],
            nose,
            [cx + yaw * 26.0 - mouth_w, mouth_y - smile],
            [cx + yaw * 26.0 + mouth_w, mouth_y - smile],
        ],
        np.float32,
    )

    img = np.empty((_C, _C, 3), np.float32)
    img[:] = bg
    face_c = (cx + yaw * 10.0, eye_y + ident.nose_y * 0.6)
    axes = (ident.face_w * (1 - abs(yaw) * 0.3), ident.face_h)
    # a neck below the chin, in the face's shadow: a head on a body, not a disc in the air
    cv2.rectangle(img, (int(face_c[0] - axes[0] * 0.55), int(face_c[1])), (int(face_c[0] + axes[0] * 0.55), _C),
                  (ident.skin * 0.8).tolist(), -1)
    mask = np.zeros((_C, _C), np.uint8)
    cv2.ellipse(mask, (int(face_c[0]), int(face_c[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 255, -1)
    hair_top = int(face_c[1] - axes[1] + ident.hairline)
    # hair: the upper cap of a slightly larger ellipse, drawn before the skin shows
    cv2.ellipse(img, (int(face_c[0]), int(face_c[1])), (int(axes[0] + 5), int(axes[1] + 6)),
                0, 180, 360, ident.hair.tolist(), -1)
    # a rounded face darkens towards its outline
    ys, xs = np.mgrid[0:_C, 0:_C].astype(np.float32)
    radius = ((xs - face_c[0]) / axes[0]) ** 2 + ((ys - face_c[1]) / axes[1]) ** 2
    skin = (ident.skin + ident.texture[..., None]) * (1.0 - 0.3 * np.clip(radius, 0.0, 1.0) ** 2)[..., None]
    inside = mask.astype(bool)
    inside[:hair_top] = False
    img[inside] = skin[inside]

    # eyes as a detector knows them: a shaded socket, a small sclera, the iris and pupil, a dark upper lid
    eye_open = rng.uniform(2.0, 4.5)
    socket = (ident.skin * 0.72).tolist()
    for i in (0, 1):
        x, y = lm[i]
        centre = (int(round(x)), int(round(y)))
        cv2.ellipse(img, centre, (9, int(round(eye_open + 4))), 0, 0, 360, socket, -1)
        cv2.ellipse(img, centre, (6, int(round(eye_open))), 0, 0, 360, (200, 205, 210), -1)
        cv2.circle(img, centre, 3, ident.iris.tolist(), -1)
        cv2.circle(img, centre, 1, (10, 10, 10), -1)
        cv2.ellipse(img, centre, (7, int(round(eye_open))), 0, 180, 360, (60, 50, 50), 1)
        tilt = ident.brow_tilt * (1 if i == 0 else -1)
        brow_y = y - 9 - eye_open
        cv2.line(img, (int(x - 8), int(brow_y + tilt)), (int(x + 8), int(brow_y - tilt)),
                 (ident.hair * 0.8).tolist(), ident.brow_thickness)
    shade = (ident.skin * 0.65).tolist()
    nx, ny = lm[2]
    cv2.line(img, (int(nx - yaw * 8), int(eye_y + 4)), (int(nx), int(ny)), (ident.skin * 0.85).tolist(), 2)
    cv2.ellipse(img, (int(nx), int(ny)), (5, 3), 0, 0, 180, shade, 2)
    mouth_open = rng.uniform(0.0, 5.0)
    mc = ((lm[3] + lm[4]) / 2).astype(int)
    lip = (ident.skin * np.array([0.55, 0.5, 0.8])).tolist()
    cv2.ellipse(img, (int(mc[0]), int(mc[1])), (int(mouth_w), int(2 + mouth_open)), 0, 0, 360, lip, -1)
    cv2.line(img, (int(lm[3][0]), int(mc[1])), (int(lm[4][0]), int(mc[1])), (40, 30, 50), 1)  # where the lips meet
    if mouth_open > 1.5:
        cv2.ellipse(img, (int(mc[0]), int(mc[1])), (int(mouth_w * 0.7), int(mouth_open * 0.6)),
                    0, 0, 360, (30, 20, 40), -1)
    return img, lm, (face_c, axes)


def _placement(rng: np.random.Generator, size: int, cfg: SynthConfig) -> np.ndarray:
    """Random similarity from the canonical frame to the canvas, face off centre."""
    roll = np.deg2rad(np.clip(rng.normal(0.0, cfg.max_roll_deg / 2.5), -cfg.max_roll_deg, cfg.max_roll_deg))
    scale = size / _C * rng.uniform(0.45, 0.85)
    c, s = scale * np.cos(roll), scale * np.sin(roll)
    half = _C * scale / 2
    slack = max(size / 2 - half * 0.8, 0.0)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-slack, slack, 2) * 0.6
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    m[:, 2] = centre - m[:, :2] @ np.array([_C / 2, _C / 2])
    return m


def _transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _degrade(img: np.ndarray, kind: str, sev: float, rng: np.random.Generator, bank: np.ndarray,
             lm: np.ndarray, face_size: float) -> np.ndarray:
    if kind == "blur":
        sigma = (0.4 + 3.6 * sev) * face_size / 100.0
        return cv2.GaussianBlur(img, (0, 0), sigmaX=max(sigma, 0.3))
    if kind == "noise":
        return img + _noise_window(bank, *img.shape[:2], rng) * (4.0 + 46.0 * sev)
    if kind == "lowres":
        h, w = img.shape[:2]
        f = 1.0 / (1.0 + 7.0 * sev)
        small = cv2.resize(img, (max(int(w * f), 8), max(int(h * f), 8)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "contrast":
        mean = img.mean(axis=(0, 1), keepdims=True)
        return mean + (img - mean) * (1.0 - 0.85 * sev)
    if kind == "occlusion":
        # a patch over a random landmark (sunglasses, hand, mask), area grows with severity
        centre = lm[int(rng.integers(0, 5))]
        half = face_size * (0.12 + 0.38 * sev)
        x1, y1 = (centre - half * rng.uniform(0.6, 1.4, 2)).astype(int)
        x2, y2 = (centre + half * rng.uniform(0.6, 1.4, 2)).astype(int)
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), rng.uniform(0, 255, 3).tolist(), -1)
        return img
    if kind == "jpeg":
        return img  # applied at encode time through the quality setting
    raise ValueError(f"unknown degradation {kind!r}; valid: {DEGRADATIONS}")


def render_sample(cfg: SynthConfig, ident: Identity, identity: int, sample: int, bank: np.ndarray) -> Sample:
    rng = np.random.default_rng([cfg.seed, identity, sample])
    size = int(rng.integers(cfg.min_canvas, cfg.max_canvas + 1))
    bg = rng.uniform(30, 225, 3).astype(np.float32)
    face, lm_c, (face_c, axes) = _canonical_face(ident, rng, bg)
    m = _placement(rng, size, cfg)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = bg
    cv2.warpAffine(face, m, (size, size), dst=canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    landmarks = _transform(m, lm_c)

    # illumination: a linear gradient in a random direction, plus a global gain
    direction = rng.normal(0.0, 1.0, 2)
    direction /= np.linalg.norm(direction) + 1e-9
    ramp = (np.arange(size, dtype=np.float32) - size / 2) / size
    light = 1.0 + rng.uniform(0.0, 0.5) * (ramp[None, :] * direction[0] + ramp[:, None] * direction[1])
    canvas *= (light * rng.uniform(0.8, 1.15))[..., None]
    canvas += _noise_window(bank, size, size, rng) * 2.0  # sensor noise every image has

    corners = np.array([[face_c[0] - axes[0], face_c[1] - axes[1]], [face_c[0] + axes[0], face_c[1] - axes[1]],
                        [face_c[0] - axes[0], face_c[1] + axes[1]], [face_c[0] + axes[0], face_c[1] + axes[1]]])
    pts = _transform(m, corners)
    jitter = rng.normal(0.0, 0.03, 4) * (pts[:, 0].max() - pts[:, 0].min())
    bbox = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]) + jitter
    bbox = np.clip(bbox, 0, size - 1).astype(np.float32)

    kind, sev, quality = "none", 0.0, cfg.jpeg_quality
    if rng.random() < cfg.degraded_share:
        kind = DEGRADATIONS[int(rng.integers(0, len(DEGRADATIONS)))]
        sev = float(rng.uniform(0.1, 1.0))
        face_size = float(np.linalg.norm(m[:, 0]) * _C)
        canvas = _degrade(canvas, kind, sev, rng, bank, landmarks, face_size)
        if kind == "jpeg":
            quality = int(round(55 - 50 * sev))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return Sample(image, landmarks, bbox, kind, sev, quality)


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def generate_rows(cfg: SynthConfig, identities: range | None = None) -> Iterator[dict]:
    """Rows in the face shard format (plus degradation and severity), identity by identity."""
    bank = _noise_bank(cfg.seed)
    for identity in identities if identities is not None else range(cfg.identities):
        ident = make_identity(cfg.seed, identity)
        subject = f"id{identity:05d}"
        for sample in range(cfg.samples_per_identity):
            s = render_sample(cfg, ident, identity, sample, bank)
            yield {
                IMAGE_ID: f"{subject}/{sample:04d}.jpg",
                SUBJECT_ID: subject,
                IMAGE: encode_jpeg(s.image, s.jpeg_quality),
                LANDMARKS: s.landmarks.reshape(-1).tolist(),
                BBOX: s.bbox.tolist(),
                "degradation": s.degradation,
                "severity": s.severity,
            }


def write_synthetic(uri: str, cfg: SynthConfig, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                    progress=None) -> dict:
    """Generate ``cfg.total`` faces straight into shards at ``uri``; return the summary."""
    counts = dict.fromkeys(("none", *DEGRADATIONS), 0)
    chunk: list[dict] = []
    with ShardWriter(uri, SYNTH_SCHEMA, rows_per_shard) as writer:
        for row in generate_rows(cfg):
            counts[row["degradation"]] += 1
            chunk.append(row)
            if len(chunk) >= 256:
                writer.write_rows(chunk)
                if progress:
                    progress(len(chunk))
                chunk = []
        writer.write_rows(chunk)
        if progress and chunk:
            progress(len(chunk))
    summary = {
        "kind": "synth",
        "rows": writer.rows_written,
        "shards": len(writer.files),
        "identities": cfg.identities,
        "samples_per_identity": cfg.samples_per_identity,
        "seed": cfg.seed,
        "degradations": counts,
        "rejected": 0,
    }
    write_summary(uri, summary)
    return summary
