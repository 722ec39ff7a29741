"""The synthetic scene renderer: one RGB-thermal road frame and its MFNet labels, drawn from a random generator.

Each frame is a road scene drawn in perspective with all nine MFNet classes: curbs ("curve") along the
road, bumps across it, cars, people, bikes, car stops, guardrails and colour cones, over an unlabeled
background of sky, buildings, sidewalk and road (MFNet has no road class). People and cars are warm in
the thermal channel; cones, bumps, curbs, car stops and guardrails have distinctive colours but nearly the
background's temperature, so RGB + thermal (the CENet teacher) can beat thermal only (the EKNet student).
Night frames have dark, noisy RGB with light glare while the thermal channel stays informative.
Distractors (crosswalks, lane marks, orange signs, warm vents, shadows) keep it non-trivial.

The writer of whole synthetic folders is util/data/synthetic.py.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

CAR, PERSON, BIKE, CURVE, CAR_STOP, GUARDRAIL, CONE, BUMP = range(1, 9)


class _Scene:
    """Float RGB (H, W, 3) and thermal (H, W) in [0, 1] and the uint8 label map, painted in order.

    Shapes are (y0, x0, mask) regions: a bool mask of the shape's bounding box at (y0, x0).
    """

    def __init__(self, h: int, w: int, rng: np.random.Generator):
        self.h, self.w, self.rng = h, w, rng
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.th = np.zeros((h, w), np.float32)
        self.label = np.zeros((h, w), np.uint8)
        self.lights: list[tuple[tuple, tuple[float, float, float]]] = []  # emissive at night

    def _region(self, x0: float, y0: float, x1: float, y1: float, draw) -> tuple:
        x0, y0 = max(0, int(np.floor(x0)) - 1), max(0, int(np.floor(y0)) - 1)
        x1, y1 = min(self.w, int(np.ceil(x1)) + 2), min(self.h, int(np.ceil(y1)) + 2)
        m = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.uint8)
        if m.size:
            draw(m, np.array([x0, y0]))
        return y0, x0, m.astype(bool)

    def poly(self, pts) -> tuple:
        p = np.asarray(pts, np.float64)
        return self._region(*p.min(0), *p.max(0), lambda m, o: cv2.fillPoly(m, [np.round(p - o).astype(np.int32)], 1))

    def rect(self, x0, y0, x1, y1) -> tuple:
        return self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    def disc(self, c, r, thickness: int = -1) -> tuple:
        r = max(1, int(round(r)))
        pad = r + max(thickness, 0)
        return self._region(c[0] - pad, c[1] - pad, c[0] + pad, c[1] + pad, lambda m, o: cv2.circle(
            m, (int(round(c[0] - o[0])), int(round(c[1] - o[1]))), r, 1, thickness))

    def line(self, p0, p1, thickness) -> tuple:
        t = max(1, int(round(thickness)))
        return self._region(min(p0[0], p1[0]) - t, min(p0[1], p1[1]) - t, max(p0[0], p1[0]) + t,
                            max(p0[1], p1[1]) + t, lambda m, o: cv2.line(
            m, tuple(int(round(v)) for v in np.subtract(p0, o)), tuple(int(round(v)) for v in np.subtract(p1, o)), 1, t))

    def view(self, region: tuple, array: np.ndarray) -> np.ndarray:
        y0, x0, m = region
        return array[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]

    def paint(self, region: tuple, cls: Optional[int], colour, temp: float) -> tuple:
        """Paint a region: class ``cls`` (None keeps the label), a jittered colour and a temperature."""
        m = region[2]
        if cls is not None:
            self.view(region, self.label)[m] = cls
        self.view(region, self.rgb)[m] = np.clip(np.asarray(colour, np.float32) * self.rng.uniform(0.9, 1.1), 0, 1)
        self.view(region, self.th)[m] = temp
        return region

    def stripes(self, region: tuple, axis: int, period: int, colour) -> None:
        """Recolour every other band of ``period`` rows (axis 0) or columns (axis 1) of a painted region."""
        y0, x0, m = region
        idx = np.arange(m.shape[axis]) + (y0, x0)[axis]
        band = ((idx // period) % 2 == 0)[:, None] if axis == 0 else ((idx // period) % 2 == 0)[None, :]
        self.view(region, self.rgb)[m & band] = colour


class _Road:
    """Perspective road geometry: row of the horizon, vanishing x and the road edges per row."""

    def __init__(self, h: int, w: int, rng: np.random.Generator):
        self.h, self.w = h, w
        self.yh = h * rng.uniform(0.38, 0.48)
        self.xv = w * rng.uniform(0.4, 0.6)
        self.half0 = w * 0.015
        self.lb = self.xv - w * rng.uniform(0.45, 0.8)
        self.rb = self.xv + w * rng.uniform(0.45, 0.8)

    def t(self, y: float) -> float:  # 0 at the horizon, 1 at the bottom row
        return (y - self.yh) / (self.h - self.yh)

    def y(self, t: float) -> float:
        return self.yh + t * (self.h - self.yh)

    def left(self, t: float) -> float:
        return self.xv - self.half0 + (self.lb - self.xv + self.half0) * t

    def right(self, t: float) -> float:
        return self.xv + self.half0 + (self.rb - self.xv - self.half0) * t


def _jitter(rng, base, amount=0.08):
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def _background(s: _Scene, road: _Road, day: bool, temps: dict) -> None:
    rng, h, w = s.rng, s.h, s.w
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    sky = np.array([0.45, 0.65, 0.9] if day else [0.03, 0.04, 0.08], np.float32)
    s.rgb[:] = sky * (1.1 - 0.3 * yy[..., None])
    s.th[:] = 0.08 + 0.06 * yy
    x = -rng.uniform(0, 0.1) * w
    while x < w:  # buildings along the horizon; windows lit at night
        bw, bh = w * rng.uniform(0.08, 0.22), road.yh * rng.uniform(0.3, 0.95)
        colour = _jitter(rng, rng.choice([[0.55, 0.5, 0.45], [0.6, 0.6, 0.62], [0.45, 0.35, 0.3], [0.7, 0.68, 0.6]]))
        s.paint(s.rect(x, road.yh - bh, x + bw, road.yh + 1), 0, colour, rng.uniform(0.3, 0.45))
        win = max(1.0, w * 0.012)
        for wy in np.arange(road.yh - bh + 2 * win, road.yh - 2 * win, 3 * win):
            for wx in np.arange(x + win, x + bw - win, 2.5 * win):
                if rng.random() < 0.5:
                    lit = not day and rng.random() < 0.4
                    b = s.paint(s.rect(wx, wy, wx + win, wy + win), 0,
                                [0.95, 0.85, 0.5] if lit else [0.2, 0.25, 0.3], 0.45 if lit else 0.35)
                    if lit:
                        s.lights.append((b, (0.9, 0.8, 0.45)))
        if rng.random() < 0.25:  # orange sign: cone colour, wrong place (RGB distractor)
            sx, sy = x + bw * rng.uniform(0.1, 0.6), road.yh - bh * rng.uniform(0.2, 0.8)
            s.paint(s.rect(sx, sy, sx + w * 0.03, sy + h * 0.03), 0, [0.95, 0.45, 0.08], 0.4)
        if rng.random() < 0.3:  # warm vent: person-like heat, wrong shape and place (thermal distractor)
            vx, vy = x + bw * rng.uniform(0.1, 0.8), road.yh - bh * rng.uniform(0.1, 0.5)
            s.paint(s.rect(vx, vy, vx + w * 0.02, vy + h * 0.06), 0, colour * 0.8, rng.uniform(0.7, 0.9))
        x += bw + rng.uniform(-0.02, 0.05) * w
    ground = [0.5, 0.5, 0.48] if rng.random() < 0.6 else [0.3, 0.45, 0.25]  # sidewalk or grass
    s.paint(s.rect(-1, road.yh, w + 1, h + 1), 0, ground, temps["side"])
    s.paint(s.poly([(road.left(0), road.yh), (road.right(0), road.yh), (road.right(1), h), (road.left(1), h)]),
            0, [0.3, 0.3, 0.32], temps["road"])
    for t0 in np.arange(rng.uniform(0.02, 0.1), 1.0, 0.18):  # dashed centre line
        t1 = min(1.0, t0 + 0.08)
        c0, c1 = (road.left(t0) + road.right(t0)) / 2, (road.left(t1) + road.right(t1)) / 2
        s.paint(s.poly([(c0 - w * 0.004 * t0, road.y(t0)), (c0 + w * 0.004 * t0, road.y(t0)),
                        (c1 + w * 0.006 * t1, road.y(t1)), (c1 - w * 0.006 * t1, road.y(t1))]),
                0, [0.85, 0.85, 0.8], temps["road"] - 0.02)
    if rng.random() < 0.3:  # crosswalk: white bands on the road (bump look-alike)
        t = rng.uniform(0.3, 0.8)
        y0, y1 = road.y(t), road.y(t) + max(2, h * 0.05 * t)
        xs = np.linspace(road.left(t), road.right(t), 9)
        for xa, xb in zip(xs[:-1:2], xs[1::2]):
            s.paint(s.rect(xa, y0, xb, y1), 0, [0.9, 0.9, 0.88], temps["road"] - 0.03)
    if day and rng.random() < 0.5:  # shadow on the road
        t = rng.uniform(0.2, 0.9)
        region = s.poly([(road.left(t), road.y(t)), (road.right(t) * 0.8, road.y(t)),
                         (road.right(t + 0.1), road.y(t + 0.1)), (road.left(t + 0.1), road.y(t + 0.1))])
        s.view(region, s.rgb)[region[2]] *= 0.55


def _curb(s: _Scene, road: _Road, side: int, temps: dict) -> None:
    w, rng = s.w, s.rng
    edge = road.left if side < 0 else road.right
    width = w * rng.uniform(0.02, 0.035)
    pts = [(edge(0), road.yh), (edge(0) + side * 0.5, road.yh), (edge(1) + side * width, s.h), (edge(1), s.h)]
    region = s.paint(s.poly(pts), CURVE, [0.78, 0.78, 0.72], temps["road"] + rng.uniform(-0.03, 0.03))
    if rng.random() < 0.5:  # painted red/white curb
        s.stripes(region, 0, max(2, int(s.h * 0.05)), (0.8, 0.15, 0.12))


def _bump(s: _Scene, road: _Road, temps: dict) -> None:
    rng, w = s.rng, s.w
    t = rng.uniform(0.35, 0.9)
    y0 = road.y(t)
    y1 = y0 + max(2.0, s.h * 0.035 * t)
    region = s.paint(s.poly([(road.left(t), y0), (road.right(t), y0), (road.right(t), y1), (road.left(t), y1)]),
                     BUMP, [0.9, 0.78, 0.1], temps["road"] + rng.uniform(-0.02, 0.04))
    s.stripes(region, 1, max(2, int(w * 0.04 * t)), (0.1, 0.1, 0.1))


def _guardrail(s: _Scene, road: _Road, side: int, temps: dict) -> None:
    rng, h, w = s.rng, s.h, s.w
    # Base line from near the vanishing point towards the image side: a long, thin, shallow band.
    end_x = -0.3 * w if side < 0 else 1.3 * w
    end_y = road.y(rng.uniform(0.25, 0.5))
    post, thick = h * rng.uniform(0.05, 0.08), h * rng.uniform(0.025, 0.04)

    def at(u):  # base point and rail top at fraction u along the line
        x, y = road.xv + (end_x - road.xv) * u, road.yh + (end_y - road.yh) * u
        return x, y, y - post * u

    u0 = 0.15
    x0, _, top0 = at(u0)
    x1, _, top1 = at(1.0)
    colour, temp = [0.72, 0.74, 0.8], temps["side"] + rng.uniform(-0.03, 0.03)
    s.paint(s.poly([(x0, top0), (x1, top1), (x1, top1 + thick), (x0, top0 + thick * u0)]), GUARDRAIL, colour, temp)
    for u in np.arange(u0 + 0.05, 1.0, 0.12):
        x, y, top = at(u)
        s.paint(s.line((x, top), (x, y), max(1, w * 0.008 * u)), GUARDRAIL, [0.55, 0.56, 0.6], temp)


def _car_stops(s: _Scene, road: _Road, temps: dict) -> None:
    rng, w, h = s.rng, s.w, s.h
    side = rng.choice([-1, 1])
    edge = road.left if side < 0 else road.right
    colour = [0.9, 0.8, 0.2] if rng.random() < 0.6 else [0.7, 0.7, 0.68]
    for t in np.sort(rng.uniform(0.3, 1.0, rng.integers(1, 4))):
        bw, bh = max(3.0, w * 0.09 * t), max(2.0, h * 0.035 * t)
        x = edge(t) + side * (w * 0.03 * t + (0 if side > 0 else bw))  # on the sidewalk, past the curb
        x = float(np.clip(x, 0, w - bw))
        y = road.y(t)
        s.paint(s.rect(x, y - bh, x + bw, y), CAR_STOP, colour, temps["side"] + rng.uniform(0.0, 0.05))


def _cone(s: _Scene, road: _Road, t: float, temps: dict) -> None:
    rng = s.rng
    hc = max(3.0, s.h * 0.09 * t)
    x = rng.uniform(road.left(t) + hc, road.right(t) - hc)
    y = road.y(t)
    temp = temps["road"] + rng.uniform(-0.03, 0.03)
    s.paint(s.poly([(x - 0.4 * hc, y), (x + 0.4 * hc, y), (x, y - hc)]), CONE, [0.98, 0.42, 0.05], temp)
    if hc >= 6:
        s.paint(s.rect(x - 0.2 * hc, y - 0.55 * hc, x + 0.2 * hc, y - 0.4 * hc), CONE, [0.95, 0.95, 0.95], temp)


def _car(s: _Scene, road: _Road, t: float, day: bool) -> None:
    rng = s.rng
    cw = s.w * rng.uniform(0.2, 0.3) * t
    ch = cw * rng.uniform(0.55, 0.75)
    x = rng.uniform(road.left(t), road.right(t) - cw)
    yb = road.y(t)
    body = _jitter(rng, [[0.7, 0.1, 0.1], [0.1, 0.2, 0.6], [0.85, 0.85, 0.85], [0.15, 0.15, 0.15],
                         [0.6, 0.62, 0.65]][rng.integers(5)], 0.05)
    warm = rng.uniform(0.58, 0.72)
    s.paint(s.poly([(x + 0.15 * cw, yb - ch), (x + 0.85 * cw, yb - ch), (x + cw, yb - 0.55 * ch),
                    (x, yb - 0.55 * ch)]), CAR, body * 0.9, warm - 0.05)
    s.paint(s.poly([(x + 0.22 * cw, yb - 0.92 * ch), (x + 0.78 * cw, yb - 0.92 * ch), (x + 0.88 * cw, yb - 0.6 * ch),
                    (x + 0.12 * cw, yb - 0.6 * ch)]), CAR, [0.15, 0.18, 0.22], warm - 0.12)  # windows
    s.paint(s.rect(x, yb - 0.58 * ch, x + cw, yb - 0.12 * ch), CAR, body, warm)
    for wx in (x + 0.04 * cw, x + 0.76 * cw):
        s.paint(s.rect(wx, yb - 0.2 * ch, wx + 0.2 * cw, yb), CAR, [0.05, 0.05, 0.05], warm + 0.15)
    lc = (0.9, 0.1, 0.05) if rng.random() < 0.5 else (1.0, 1.0, 0.85)  # tail or head lights
    for lx in (x + 0.03 * cw, x + 0.85 * cw):
        b = s.paint(s.rect(lx, yb - 0.5 * ch, lx + 0.12 * cw, yb - 0.4 * ch), CAR, lc, warm + 0.05)
        if not day:
            s.lights.append((b, lc))


def _person(s: _Scene, x: float, yb: float, ph: float) -> None:
    rng = s.rng
    clothes = _jitter(rng, [[0.15, 0.15, 0.2], [0.6, 0.1, 0.1], [0.2, 0.35, 0.6], [0.8, 0.8, 0.75]][rng.integers(4)])
    hot = rng.uniform(0.8, 0.9)
    lw = max(1, ph * 0.08)
    s.paint(s.line((x - 0.06 * ph, yb - 0.5 * ph), (x - 0.1 * ph, yb), lw), PERSON, clothes * 0.6, hot - 0.05)
    s.paint(s.line((x + 0.06 * ph, yb - 0.5 * ph), (x + 0.1 * ph, yb), lw), PERSON, clothes * 0.6, hot - 0.05)
    s.paint(s.rect(x - 0.12 * ph, yb - 0.82 * ph, x + 0.12 * ph, yb - 0.45 * ph), PERSON, clothes, hot - 0.03)
    s.paint(s.line((x - 0.12 * ph, yb - 0.78 * ph), (x - 0.18 * ph, yb - 0.5 * ph), lw * 0.8), PERSON, clothes, hot)
    s.paint(s.line((x + 0.12 * ph, yb - 0.78 * ph), (x + 0.18 * ph, yb - 0.5 * ph), lw * 0.8), PERSON, clothes, hot)
    s.paint(s.disc((x, yb - 0.9 * ph), 0.09 * ph), PERSON, _jitter(rng, [0.85, 0.65, 0.5], 0.15), min(1.0, hot + 0.08))


def _bike(s: _Scene, road: _Road, t: float, temps: dict) -> None:
    rng = s.rng
    r = max(1.5, s.h * 0.075 * t)
    x = rng.uniform(road.left(t) - 0.1 * s.w, road.right(t) + 0.1 * s.w)
    yb = road.y(t)
    colour = _jitter(rng, [[0.1, 0.6, 0.9], [0.9, 0.9, 0.1], [0.2, 0.8, 0.3], [0.9, 0.2, 0.6]][rng.integers(4)], 0.05)
    temp = temps["side"] + rng.uniform(0.05, 0.12)
    c0, c1, top = (x - 1.3 * r, yb - r), (x + 1.3 * r, yb - r), (x, yb - 2.1 * r)
    for c in (c0, c1):
        s.paint(s.disc(c, r, max(1, int(round(0.3 * r)))), BIKE, [0.08, 0.08, 0.08], temp)
    thick = max(1.0, 0.25 * r)
    for p0, p1 in ((c0, top), (c1, top), (c0, (x, yb - r)), ((x, yb - r), top), (c1, (c1[0], yb - 2.5 * r))):
        s.paint(s.line(p0, p1, thick), BIKE, colour, temp)
    if rng.random() < 0.6:  # rider
        _person(s, x, yb - 0.9 * r, 3.4 * r)


def render(rng: np.random.Generator, h: int, w: int, day: bool, force: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (H, W, 4) uint8 R, G, B, thermal and (H, W) uint8 labels. Class ``force`` always appears.

    Every draw comes from ``rng`` in a fixed order, so the same generator state gives the same pixels."""
    s, road = _Scene(h, w, rng), _Road(h, w, rng)
    temps = {"road": rng.uniform(0.45, 0.55) if day else rng.uniform(0.28, 0.36),
             "side": rng.uniform(0.4, 0.48) if day else rng.uniform(0.26, 0.32)}
    _background(s, road, day, temps)

    def want(cls: int, p: float) -> bool:
        return cls == force or rng.random() < p

    sides = [side for side in (-1, 1) if rng.random() < 0.8]
    if force == CURVE and not sides:
        sides = [int(rng.choice([-1, 1]))]
    for side in sides:
        _curb(s, road, side, temps)
    if want(GUARDRAIL, 0.3):
        _guardrail(s, road, int(rng.choice([-1, 1])), temps)
    if want(BUMP, 0.25):
        _bump(s, road, temps)
    if want(CAR_STOP, 0.25):
        _car_stops(s, road, temps)

    objects = []  # (depth t, kind): painted far to near
    objects += [(rng.uniform(0.15, 0.95), CAR) for _ in range(rng.integers(int(force == CAR), 4))]
    objects += [(rng.uniform(0.2, 1.0), PERSON) for _ in range(rng.integers(int(force == PERSON), 4))]
    objects += [(rng.uniform(0.25, 0.95), BIKE) for _ in range(rng.integers(int(force == BIKE), 2) if want(BIKE, 0.35) else 0)]
    objects += [(rng.uniform(0.2, 0.95), CONE) for _ in range(rng.integers(1, 5) if want(CONE, 0.25) else 0)]
    for t, kind in sorted(objects):
        if kind == CAR:
            _car(s, road, t, day)
        elif kind == PERSON:
            side = road.left(t) - s.w * 0.1 if rng.random() < 0.5 else road.right(t) + s.w * 0.1
            x = float(np.clip(side + rng.normal(0, 0.12 * s.w), 0.03 * s.w, 0.97 * s.w))
            _person(s, x, road.y(t), s.h * rng.uniform(0.3, 0.42) * t + 4)
        elif kind == BIKE:
            _bike(s, road, t, temps)
        else:
            _cone(s, road, t, temps)

    # Texture: smooth brightness field plus pixel noise; night darkens RGB and adds sensor noise and glare.
    field = cv2.resize(rng.normal(0, 1, (max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    rgb = s.rgb * (1 + 0.08 * field[..., None]) * rng.uniform(0.85, 1.15)
    if day:
        rgb += rng.normal(0, 0.025, rgb.shape).astype(np.float32)
    else:
        yy, xx = np.ogrid[0:h, 0:w]
        headlights = np.exp(-((xx - w / 2) / (0.4 * w)) ** 2 - ((yy - h) / (0.4 * h)) ** 2).astype(np.float32)
        rgb = rgb * (rng.uniform(0.12, 0.22) * (1 + 2.5 * headlights))[..., None]
        rgb += rng.normal(0, 0.04, rgb.shape).astype(np.float32)
        glow = np.zeros_like(rgb)
        for region, colour in s.lights:
            s.view(region, glow)[region[2]] = colour
        sigma = max(1.0, w / 128)
        rgb = np.maximum(rgb, glow) + 0.6 * cv2.GaussianBlur(glow, (0, 0), 2 * sigma)
    rgb = cv2.GaussianBlur(rgb, (0, 0), max(0.5, w / 640))
    th = s.th * (1 + 0.04 * field) + rng.normal(0, 0.025, s.th.shape).astype(np.float32)
    th = cv2.GaussianBlur(th, (0, 0), max(0.7, w / 256)) + rng.normal(0, 0.01, s.th.shape).astype(np.float32)
    image = np.concatenate([rgb, th[..., None]], axis=2)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), s.label
