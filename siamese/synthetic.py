"""Seeded synthetic face-like images for tests, demos and benchmarks.

Real face data sets cannot be shipped with the repository, so the pipelines, the
encoder and the open-set metrics are exercised on cartoon faces rendered here.
Every identity has its own fixed geometry and texture (face outline, hair, eyes,
brows, nose, mouth, ears, glasses, beard, moles); every image of that identity
varies pose, lighting, expression, noise and occasional occlusion, so that images
of one person are not near-copies but the person stays recognisable.

Determinism: identity ``i`` is drawn from ``np.random.default_rng([seed, i, 1])``
and its image ``j`` from ``np.random.default_rng([seed, i, 2, j])``.  The trailing
stream tags (1 and 2) keep the two streams apart (``SeedSequence`` pads short
entropy with zeros, so ``[seed, i]`` and ``[seed, i, 0]`` would collide).  Because
each identity and image has its own stream, generating 10 identities and then 20
yields the same first 10, and asking for more images per identity leaves the
first ones unchanged.  PNG files are written without metadata, so the same seed
gives byte-identical files.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

__all__ = [
    "IdentityParams",
    "sample_identity",
    "render_face",
    "generate_gallery",
    "identity_name",
    "identity_rng",
    "image_rng",
    "DEFAULT_SIZE",
    "SUPPORTED_FORMATS",
]

#: (width, height) of the AT&T / ORL face images, which the synthetic set imitates.
DEFAULT_SIZE: tuple[int, int] = (92, 112)

#: File format -> (Pillow format name, file suffix).
SUPPORTED_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "pgm": ("PPM", ".pgm"),  # greyscale only, like the AT&T set
    "bmp": ("BMP", ".bmp"),
}

# Render at this multiple of the target size, then downsample with Lanczos, which
# antialiases the hard ImageDraw edges.
_SUPERSAMPLE = 3

# Stream tags for the per-identity and per-image generators (see module docstring).
_IDENTITY_STREAM = 1
_IMAGE_STREAM = 2

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class IdentityParams:
    """Fixed appearance of one synthetic person.

    Lengths are fractions of the face half-width ``face_w`` / half-height
    ``face_h`` (themselves fractions of the image width / height); tones are
    RGB triples.  ``hair_style``: 0 short, 1 long, 2 receding / bald.
    """

    face_w: float
    face_h: float
    jaw: float  # 0 = round chin, 1 = pointed chin
    cheek: float  # superellipse exponent of the outline, >2 = squarer face
    skin: RGB
    hair: RGB
    hair_style: int
    hairline: float  # face-relative height of the hairline (above the eyes)
    hair_volume: float
    parting: float  # horizontal position of the fringe parting, -1..1
    ear_size: float
    eye_y: float
    eye_spacing: float
    eye_w: float
    eye_h: float
    eye_tilt: float  # radians, outer corner up (>0) or down
    iris: RGB
    brow_gap: float
    brow_thickness: float
    brow_slant: float
    brow_tone: RGB
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    lip: RGB
    smile_base: float
    glasses: bool
    glasses_round: bool
    glasses_size: float
    beard: bool
    moustache: bool
    moles: tuple[tuple[float, float, float], ...]  # (u, v, radius) in face units
    freckles: tuple[tuple[float, float], ...]
    forehead_lines: int


def identity_name(index: int) -> str:
    """Folder / label name of identity ``index`` (``person_0000``, ...)."""
    return f"person_{index:04d}"


def _tone(rgb: np.ndarray) -> RGB:
    clipped = np.clip(np.round(rgb), 0, 255).astype(int)
    return (int(clipped[0]), int(clipped[1]), int(clipped[2]))


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw the fixed appearance of one person from ``rng``."""
    # Skin: a luminance plus a warm hue; the luminance spread is what keeps people
    # apart in greyscale, the hue only matters for RGB output.
    lum = rng.uniform(95.0, 225.0)
    warmth = rng.uniform(0.0, 1.0)
    skin = np.array([lum * (1.05 + 0.12 * warmth), lum * 0.92, lum * (0.78 - 0.1 * warmth)])

    # Hair: mostly dark, some blond / grey; forced away from the skin luminance so
    # the hairline is visible in greyscale.
    hair_kind = rng.choice(4, p=[0.45, 0.3, 0.15, 0.1])  # black, brown, blond, grey
    hair_base = {
        0: np.array([25.0, 22.0, 20.0]),
        1: np.array([85.0, 58.0, 38.0]),
        2: np.array([200.0, 170.0, 110.0]),
        3: np.array([165.0, 165.0, 168.0]),
    }[int(hair_kind)]
    hair = hair_base * rng.uniform(0.8, 1.2)
    if abs(float(hair.mean()) - lum) < 55.0:
        hair = hair * (0.45 if hair.mean() < lum + 20 else 1.25)

    hair_style = int(rng.choice(3, p=[0.5, 0.35, 0.15]))
    hairline = rng.uniform(0.45, 0.65) if hair_style != 2 else rng.uniform(0.72, 0.9)

    iris_kind = int(rng.integers(3))
    iris = [
        np.array([70.0, 45.0, 30.0]),
        np.array([60.0, 95.0, 130.0]),
        np.array([80.0, 100.0, 60.0]),
    ][iris_kind] * rng.uniform(0.7, 1.3)

    n_moles = int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))
    moles = tuple(
        (
            float(rng.uniform(-0.7, 0.7)),
            float(rng.uniform(-0.3, 0.75)),
            float(rng.uniform(0.015, 0.035)),
        )
        for _ in range(n_moles)
    )
    n_freckles = int(rng.integers(12, 30)) if rng.random() < 0.2 else 0
    freckles = tuple(
        (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0.0, 0.35))) for _ in range(n_freckles)
    )
    male_ish = rng.random() < 0.5
    brow_tone = _tone(np.minimum(hair, skin) * rng.uniform(0.55, 0.9))

    return IdentityParams(
        face_w=float(rng.uniform(0.28, 0.37)),
        face_h=float(rng.uniform(0.33, 0.41)),
        jaw=float(rng.uniform(0.0, 1.0)),
        cheek=float(rng.uniform(1.9, 2.8)),
        skin=_tone(skin),
        hair=_tone(hair),
        hair_style=hair_style,
        hairline=float(hairline),
        hair_volume=float(rng.uniform(0.06, 0.22)),
        parting=float(rng.uniform(-0.6, 0.6)),
        ear_size=float(rng.uniform(0.16, 0.26)),
        eye_y=float(rng.uniform(-0.2, -0.02)),
        eye_spacing=float(rng.uniform(0.32, 0.48)),
        eye_w=float(rng.uniform(0.15, 0.23)),
        eye_h=float(rng.uniform(0.045, 0.075)),
        eye_tilt=float(rng.uniform(-0.15, 0.15)),
        iris=_tone(iris),
        brow_gap=float(rng.uniform(0.1, 0.18)),
        brow_thickness=float(rng.uniform(0.025, 0.07) * (1.3 if male_ish else 1.0)),
        brow_slant=float(rng.uniform(-0.25, 0.25)),
        brow_tone=brow_tone,
        nose_length=float(rng.uniform(0.22, 0.4)),
        nose_width=float(rng.uniform(0.12, 0.24)),
        mouth_y=float(rng.uniform(0.42, 0.58)),
        mouth_width=float(rng.uniform(0.28, 0.48)),
        lip_thickness=float(rng.uniform(0.02, 0.06)),
        lip=_tone(skin * np.array([0.82, 0.55, 0.58]) * rng.uniform(0.85, 1.05)),
        smile_base=float(rng.uniform(-0.2, 0.5)),
        glasses=bool(rng.random() < 0.25),
        glasses_round=bool(rng.random() < 0.5),
        glasses_size=float(rng.uniform(1.1, 1.45)),
        beard=bool(male_ish and rng.random() < 0.3),
        moustache=bool(male_ish and rng.random() < 0.35),
        moles=moles,
        freckles=freckles,
        forehead_lines=int(rng.choice(4, p=[0.6, 0.15, 0.15, 0.1])),
    )


@dataclass(frozen=True)
class _Expression:
    """Per-image variation that is drawn in the face frame (before the pose warp)."""

    smile: float
    mouth_open: float
    eye_open: float
    brow_raise: float
    gaze: tuple[float, float]
    yaw: float
    cloth: RGB
    hair_jitter: float


class _FaceFrame:
    """Maps face-relative (u, v) coordinates to hi-res pixels.

    u runs -1..1 across the face width, v -1..1 from crown to chin; yaw shifts the
    inner features sideways (a cheap stand-in for head turn).
    """

    def __init__(self, width: int, height: int, p: IdentityParams, yaw: float) -> None:
        self.cx = width * 0.5
        self.cy = height * 0.47
        self.fw = p.face_w * width
        self.fh = p.face_h * height
        self.yaw = yaw

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + u * self.fw, self.cy + v * self.fh)

    def feat(self, u: float, v: float, depth: float = 0.0) -> tuple[float, float]:
        # Features nearer the camera (depth > 0, e.g. the nose tip) move more.
        u2 = u * (1.0 - 0.18 * abs(self.yaw)) + self.yaw * (0.28 + depth)
        return self.xy(u2, v)

    def box(self, u: float, v: float, ru: float, rv: float, depth: float = 0.0) -> list[float]:
        x, y = self.feat(u, v, depth)
        return [x - ru * self.fw, y - rv * self.fh, x + ru * self.fw, y + rv * self.fh]


def _outline(
    frame: _FaceFrame, p: IdentityParams, grow: float = 0.0, n: int = 72, shift: float = 0.0
) -> list[tuple[float, float]]:
    """Face outline: a superellipse whose lower half tapers towards the chin."""
    pts = []
    exp = 2.0 / p.cheek
    for k in range(n):
        t = 2.0 * math.pi * k / n
        c, s = math.cos(t), math.sin(t)
        u = math.copysign(abs(c) ** exp, c)
        v = math.copysign(abs(s) ** exp, s)
        if v > 0:  # below the centre line: narrow towards the chin
            u *= 1.0 - 0.35 * p.jaw * v**2
        pts.append(frame.xy(u * (1.0 + grow) + shift, v * (1.0 + grow)))
    return pts


def _scale(rgb: RGB, f: float) -> RGB:
    return _tone(np.asarray(rgb, dtype=float) * f)


def _draw_person(
    p: IdentityParams, e: _Expression, width: int, height: int, background: RGB
) -> Image.Image:
    """Draw the person (hair, head, features, shoulders) upright on ``background``."""
    img = Image.new("RGB", (width, height), background)
    d = ImageDraw.Draw(img)
    f = _FaceFrame(width, height, p, e.yaw)
    lw = max(1, round(width / 90))  # base line width in hi-res pixels
    both_polygon = d.polygon
    both_ellipse = d.ellipse

    # Shoulders, long hair falling over them, neck.
    sh_top = f.cy + f.fh * 1.25
    both_ellipse([f.cx - f.fw * 2.6, sh_top, f.cx + f.fw * 2.6, sh_top + f.fh * 2.2], e.cloth)
    vol = p.hair_volume + e.hair_jitter
    if p.hair_style == 1:
        both_ellipse([*f.xy(-1.1 - vol * 2, -0.7), *f.xy(1.1 + vol * 2, 1.35)], p.hair)
    neck = _scale(p.skin, 0.8)
    both_polygon(
        [
            f.xy(-0.45, 0.5),
            f.xy(0.45, 0.5),
            f.xy(0.5, 1.35),
            f.xy(0.0, 1.5),
            f.xy(-0.5, 1.35),
        ],
        neck,
    )

    # Back of the head.
    if p.hair_style != 2:
        both_ellipse(
            [
                f.cx - f.fw * (1.0 + vol),
                f.cy - f.fh * (1.0 + vol * 1.4),
                f.cx + f.fw * (1.0 + vol),
                f.cy + f.fh * 0.35,
            ],
            p.hair,
        )

    # Ears (turning the head hides one ear a little).
    ear = _scale(p.skin, 0.88)
    for side in (-1.0, 1.0):
        hide = max(0.0, side * e.yaw) * 0.5
        eu = side * (0.98 - hide * 0.2)
        both_ellipse(
            [
                f.xy(eu - p.ear_size * 0.5 * (1 - hide), -0.05)[0],
                f.xy(0, -0.05 - p.ear_size)[1],
                f.xy(eu + p.ear_size * 0.5 * (1 - hide), -0.05)[0],
                f.xy(0, -0.05 + p.ear_size)[1],
            ],
            ear,
        )

    # Head: nested outlines, lighter towards the middle, read as a rounded surface
    # once downsampled; the inner ones follow the yaw like the features do.
    for k, (grow, tone) in enumerate([(0.0, 0.8), (-0.07, 0.87), (-0.16, 0.94), (-0.27, 1.0)]):
        both_polygon(_outline(f, p, grow=grow, shift=e.yaw * 0.08 * k), _scale(p.skin, tone))

    # Hair cap: the crown of an enlarged outline down to a curved hairline.
    if p.hair_style != 2 or p.hairline < 0.85:
        cap = []
        crown = _outline(f, p, grow=vol if p.hair_style != 2 else 0.015, n=96)
        side_v = -p.hairline + 0.25  # hair reaches lower at the temples
        for x, y in crown:
            if (y - f.cy) / f.fh <= side_v:
                cap.append((x, y))
        # Order the crown points left to right along the top.
        cap.sort(key=lambda q: q[0])
        line = []
        for k in range(24, -1, -1):
            u = -1.05 + 2.1 * k / 24
            dip = 0.22 * (1 - u * u) - 0.06 * math.exp(-((u - p.parting) ** 2) / 0.02)
            line.append(f.xy(u, -p.hairline + 0.25 - dip - 0.25 * (1 - u * u)))
        if len(cap) >= 3:
            both_polygon(cap + line, p.hair)

    # Forehead lines, freckles and moles: fixed texture that moves with the face.
    line_col = _scale(p.skin, 0.8)
    for k in range(p.forehead_lines):
        v = -p.hairline + 0.15 + 0.07 * k
        if v < p.eye_y - p.brow_gap - 0.08:
            d.arc(f.box(0.0, v + 0.1, 0.35, 0.1), 200, 340, fill=line_col, width=lw)
    freckle = _scale(p.skin, 0.78)
    for u, v in p.freckles:
        d.ellipse(f.box(u, v, 0.012, 0.01), fill=freckle)
    for u, v, r in p.moles:
        d.ellipse(f.box(u, v, r, r * f.fw / f.fh), fill=_scale(p.skin, 0.4))

    # Eyes and brows.
    for side in (-1.0, 1.0):
        eu = side * p.eye_spacing
        ev = p.eye_y
        ew, eh = p.eye_w / 2, p.eye_h * max(e.eye_open, 0.08)
        # Socket shadow, sclera, iris, pupil, upper lid.
        d.ellipse(f.box(eu, ev, ew * 1.35, p.eye_h * 1.6), fill=_scale(p.skin, 0.88))
        tilt = side * p.eye_tilt
        pts = []
        for k in range(20):
            t = 2 * math.pi * k / 20
            du, dv = ew * math.cos(t), eh * math.sin(t)
            dv -= tilt * du * f.fw / f.fh
            pts.append(f.feat(eu + du, ev + dv))
        d.polygon(pts, fill=(235, 232, 225))
        if e.eye_open > 0.2:
            iu = eu + e.gaze[0] * ew * 0.4
            iv = ev + e.gaze[1] * eh * 0.3
            ir = min(ew * 0.45, eh * 1.1 * f.fh / f.fw)
            d.ellipse(f.box(iu, iv, ir, ir * f.fw / f.fh), fill=p.iris)
            d.ellipse(f.box(iu, iv, ir * 0.45, ir * 0.45 * f.fw / f.fh), fill=(15, 12, 12))
        d.line(pts[10:20] + pts[:1], fill=_scale(p.skin, 0.35), width=lw * 2)
        # Brow: a thick polyline above the eye, slanted per identity.
        bv = ev - p.brow_gap - e.brow_raise
        bpts = []
        for k in range(7):
            t = -1 + 2 * k / 6
            bu = eu + side * t * ew * 1.3
            # t = 1 is the outer end; a positive slant lowers it.
            bpts.append(f.feat(bu, bv - 0.03 * (1 - t * t) + t * p.brow_slant * 0.08))
        d.line(bpts, fill=p.brow_tone, width=max(1, round(p.brow_thickness * f.fh)), joint="curve")

    # Glasses: rims around the eyes plus a bridge.
    if p.glasses:
        rim = (30, 30, 35)
        for side in (-1.0, 1.0):
            eu = side * p.eye_spacing
            lens = f.box(
                eu, p.eye_y, p.eye_w * 0.5 * p.glasses_size, p.eye_h * 2.2 * p.glasses_size
            )
            if p.glasses_round:
                d.ellipse(lens, outline=rim, width=lw * 2)
            else:
                d.rounded_rectangle(lens, radius=lw * 4, outline=rim, width=lw * 2)
        d.line(
            [
                f.feat(-p.eye_spacing + p.eye_w * 0.5 * p.glasses_size, p.eye_y),
                f.feat(p.eye_spacing - p.eye_w * 0.5 * p.glasses_size, p.eye_y),
            ],
            fill=rim,
            width=lw,
        )

    # Nose: a shaded wedge, a tip and two nostrils; the tip sits nearer the camera.
    tip_v = p.eye_y + 0.05 + p.nose_length
    nw = p.nose_width / 2
    d.polygon(
        [
            f.feat(-0.03, p.eye_y + 0.05),
            f.feat(0.03, p.eye_y + 0.05, 0.05),
            f.feat(nw * 0.6, tip_v, 0.12),
            f.feat(-nw * 0.2, tip_v, 0.12),
        ],
        fill=_scale(p.skin, 0.88),
    )
    d.ellipse(f.box(0.0, tip_v - 0.01, nw * 0.55, 0.045, 0.12), fill=_scale(p.skin, 1.04))
    for side in (-1.0, 1.0):
        d.ellipse(
            f.box(side * nw * 0.55, tip_v + 0.02, nw * 0.3, 0.02, 0.1), fill=_scale(p.skin, 0.45)
        )

    # Moustache and beard.
    if p.moustache:
        d.polygon(
            [
                f.feat(-p.mouth_width * 0.6, p.mouth_y - 0.02),
                f.feat(0, p.mouth_y - 0.09, 0.05),
                f.feat(p.mouth_width * 0.6, p.mouth_y - 0.02),
                f.feat(0, p.mouth_y - 0.05, 0.05),
            ],
            fill=p.brow_tone,
        )
    if p.beard:
        bpts = [q for q in _outline(f, p, grow=0.02) if (q[1] - f.cy) / f.fh > p.mouth_y - 0.05]
        bpts.sort(key=lambda q: q[0])
        chin = [f.feat(u, p.mouth_y + 0.1) for u in (0.4, 0.0, -0.4)]
        if len(bpts) >= 3:
            d.polygon(bpts + chin, fill=_scale(p.brow_tone, 1.2))

    # Mouth: upper and lower lip arcs whose curvature follows the smile; an open
    # mouth shows a dark gap between them.
    mw = p.mouth_width / 2
    curve = (p.smile_base + e.smile) * 0.06
    gap = e.mouth_open * 0.08
    upper, lower = [], []
    for k in range(13):
        t = -1 + 2 * k / 12
        bend = curve * (1 - t * t)  # centre moves down for a smile (corners up)
        upper.append(
            f.feat(t * mw, p.mouth_y + bend - curve - gap / 2 - p.lip_thickness * (1 - t * t))
        )
        lower.append(
            f.feat(t * mw, p.mouth_y + bend - curve + gap / 2 + p.lip_thickness * 1.3 * (1 - t * t))
        )
    inner_u = [
        f.feat(t * mw, p.mouth_y + curve * (1 - t * t) - curve - gap / 2)
        for t in np.linspace(-1, 1, 13)
    ]
    inner_l = [
        f.feat(t * mw, p.mouth_y + curve * (1 - t * t) - curve + gap / 2)
        for t in np.linspace(-1, 1, 13)
    ]
    d.polygon(upper + inner_u[::-1], fill=p.lip)
    d.polygon(inner_l + lower[::-1], fill=_scale(p.lip, 1.08))
    if gap > 0.005:
        d.polygon(inner_u + inner_l[::-1], fill=(40, 20, 22))
    d.line(inner_u, fill=_scale(p.lip, 0.5), width=lw)

    return img


def _sample_expression(rng: np.random.Generator, v: float) -> _Expression:
    """Per-image expression; ``v`` scales every deviation from a neutral face."""
    cloth = rng.uniform(20, 200) * rng.uniform(0.7, 1.3, size=3)
    opened = rng.random() < 0.3 * v
    mouth_open = float(rng.uniform(0.15, 0.8)) if opened else 0.0
    blink = rng.random() < 0.06 * v
    eye_open = 0.12 if blink else 0.875 + (float(rng.uniform(0.6, 1.15)) - 0.875) * v
    return _Expression(
        smile=float(rng.normal(0.0, 0.35)) * v,
        mouth_open=mouth_open,
        eye_open=float(eye_open),
        brow_raise=float(rng.uniform(-0.03, 0.05)) * v,
        gaze=(float(rng.uniform(-1, 1)) * v, float(rng.uniform(-1, 1)) * v),
        yaw=float(np.clip(rng.normal(0.0, 0.15) * v, -0.35, 0.35)),
        cloth=_tone(cloth),
        hair_jitter=float(rng.uniform(-0.02, 0.03)) * v,
    )


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def render_face(
    identity_params: IdentityParams,
    rng: np.random.Generator,
    size: tuple[int, int] = DEFAULT_SIZE,
    mode: str = "L",
    variation: float = 1.0,
) -> Image.Image:
    """Render one image of the person ``identity_params``.

    ``rng`` draws this image's variation: pose (shift, rotation, scale, yaw),
    lighting (directional gradient, brightness, contrast, gamma), expression
    (smile, open mouth, eye openness, brows, gaze), background, sensor noise,
    blur, and an occasional occluding bar or patch.  ``size`` is (width, height);
    ``mode`` is ``"L"`` (greyscale) or ``"RGB"``.  ``variation`` (0..2) scales
    every per-image deviation: 0 gives near-identical images of a person (only
    clothing and background change), 1 is the default difficulty, 2 is hard.
    """
    width, height = _check_size(size)
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    v = _check_variation(variation)
    p = identity_params
    hw, hh = width * _SUPERSAMPLE, height * _SUPERSAMPLE

    expr = _sample_expression(rng, v)
    # Background: a per-image level, tint and vertical ramp, so it carries no identity.
    bg_level = 55.0 + rng.uniform(-35.0, 35.0) * max(v, 0.3)
    background = _tone(bg_level * rng.uniform(0.85, 1.15, size=3))
    canvas = _draw_person(p, expr, hw, hh, background)

    # Pose: rotate about the face centre, scale and shift.  PIL's affine maps output
    # pixels back to input pixels, so the inverse transform is passed.  Nearest
    # sampling is enough because the box reduction below averages 3x3 samples.
    angle = math.radians(float(np.clip(rng.normal(0.0, 6.0) * v, -15.0, 15.0)))
    scale = 1.0 + float(rng.uniform(-0.08, 0.08)) * v
    tx = float(rng.uniform(-0.04, 0.04)) * hw * v
    ty = float(rng.uniform(-0.04, 0.04)) * hh * v
    cx, cy = hw * 0.5, hh * 0.47
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    a, b, d_, e_ = ca, sa, -sa, ca
    c = cx - a * (cx + tx) - b * (cy + ty)
    f_ = cy - d_ * (cx + tx) - e_ * (cy + ty)
    canvas = canvas.transform(
        (hw, hh),
        Image.Transform.AFFINE,
        (a, b, c, d_, e_, f_),
        resample=Image.Resampling.NEAREST,
        fillcolor=background,
    )
    img: np.ndarray = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = img + rng.uniform(-15.0, 15.0) * v * ramp

    # Lighting: a directional multiplicative gradient, then brightness / contrast / gamma.
    yy, xx = _grid(width, height)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    proj = ((xx / width - 0.5) * math.cos(theta) + (yy / height - 0.5) * math.sin(theta)) * 2.0
    img = img * (1.0 + rng.uniform(0.0, 0.35) * v * proj)[..., None]
    contrast = 1.0 + rng.uniform(-0.15, 0.15) * v
    img = (img - 128.0) * contrast + 128.0 + rng.uniform(-12.0, 12.0) * v
    gamma = math.exp(rng.uniform(-0.12, 0.12) * v)
    img = 255.0 * (np.clip(img, 0.0, 255.0) / 255.0) ** gamma

    # Occasional occlusion: a horizontal bar (scarf, sunglasses) or a square patch.
    if rng.random() < 0.12 * v:
        shade = rng.uniform(0.0, 255.0)
        if rng.random() < 0.5:
            top = int(rng.integers(int(height * 0.2), int(height * 0.75)))
            img[top : top + max(2, int(height * rng.uniform(0.06, 0.14))), :, :] = shade
        else:
            side = max(3, int(min(width, height) * rng.uniform(0.15, 0.3)))
            x0 = int(rng.integers(0, width - side))
            y0 = int(rng.integers(0, height - side))
            img[y0 : y0 + side, x0 : x0 + side, :] = shade

    out = Image.fromarray(np.clip(img, 0.0, 255.0).astype(np.uint8), "RGB")
    if rng.random() < 0.25 * v:  # defocus
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.0))))
    if mode == "L":
        out = out.convert("L")
    # Sensor noise last, on the output channels only.
    arr = np.asarray(out, dtype=np.float32)
    sigma = float(rng.uniform(1.5, 5.0)) * max(v, 0.2)
    arr = arr + rng.normal(0.0, sigma, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.round(arr), 0.0, 255.0).astype(np.uint8), mode)


def _check_variation(variation: float) -> float:
    v = float(variation)
    if not 0.0 <= v <= 2.0:
        raise ValueError(
            f"variation must be between 0 (near-identical) and 2 (hard), got {variation}"
        )
    return v


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"size must be (width, height), got {size!r}") from exc
    if width < 16 or height < 16:
        raise ValueError(f"size must be at least 16x16 pixels to draw a face, got {width}x{height}")
    return width, height


def identity_rng(seed: int, identity: int) -> np.random.Generator:
    """Generator for the fixed appearance of identity number ``identity``."""
    return np.random.default_rng([seed, identity, _IDENTITY_STREAM])


def image_rng(seed: int, identity: int, image: int) -> np.random.Generator:
    """Generator for image number ``image`` of identity number ``identity``."""
    return np.random.default_rng([seed, identity, _IMAGE_STREAM, image])


def generate_gallery(
    out_dir: Path,
    identities: int,
    per_identity: int,
    seed: int,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: str = "png",
    *,
    mode: str = "L",
    first_identity: int = 0,
    variation: float = 1.0,
) -> list[tuple[Path, str]]:
    """Write a seeded ImageFolder ``out_dir/person_XXXX/NNN.<fmt>`` of synthetic faces.

    Returns ``(path, identity_name)`` pairs in identity-then-image order.
    ``first_identity`` offsets the identity indices, e.g. to write a disjoint
    set of non-enrolled people (``first_identity=identities_enrolled``) with the
    same seed.  Existing files with the same names are overwritten; other files
    in ``out_dir`` are left alone.  ``mode`` is ``"L"`` (greyscale, default) or
    ``"RGB"``; ``fmt`` is one of ``png``, ``pgm`` (greyscale only) or ``bmp``;
    ``variation`` scales the per-image variation (see :func:`render_face`).
    """
    if identities < 1 or per_identity < 1:
        raise ValueError(
            f"identities and per_identity must be >= 1, got {identities} and {per_identity}"
        )
    if seed < 0 or first_identity < 0:
        raise ValueError(
            f"seed and first_identity must be non-negative, got {seed} and {first_identity}"
        )
    fmt = fmt.lower().lstrip(".")
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(SUPPORTED_FORMATS)}, got {fmt!r}")
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if fmt == "pgm" and mode != "L":
        raise ValueError("fmt='pgm' stores greyscale only; use mode='L' or fmt='png'")
    size = _check_size(size)
    _check_variation(variation)
    pil_format, suffix = SUPPORTED_FORMATS[fmt]
    digits = max(3, len(str(per_identity - 1)))

    out_dir = Path(out_dir)
    written: list[tuple[Path, str]] = []
    for i in range(first_identity, first_identity + identities):
        name = identity_name(i)
        params = sample_identity(identity_rng(seed, i))
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            img = render_face(params, image_rng(seed, i, j), size, mode=mode, variation=variation)
            path = folder / f"{j:0{digits}d}{suffix}"
            if pil_format == "PNG":
                # Fixed compression settings and no pnginfo -> no timestamps or
                # other metadata, so the bytes depend on the pixels only.
                img.save(path, format="PNG", optimize=False, compress_level=6)
            else:
                img.save(path, format=pil_format)
            written.append((path, name))
    logger.info(
        "wrote %d synthetic faces (%d identities x %d) to %s",
        len(written),
        identities,
        per_identity,
        out_dir,
    )
    return written
