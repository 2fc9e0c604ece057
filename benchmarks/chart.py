# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bar chart as PNG with the standard library only (zlib + struct):
one horizontal bar per path (median ratio), a whisker for min-max, a line
at 1.00 (plain routing), on a logarithmic axis.  Text in a built-in 3x5 pixel font."""

from __future__ import annotations

import math
import struct
import zlib

# 3x5 glyphs, rows top to bottom, "#" = ink
FONT = {
    "a": ".#.#.#####.##.#", "b": "##.#.###.#.###.", "c": ".###..#..#...##", "d": "##.#.##.##.###.",
    "e": "####..####..###", "f": "####..##.#..#..", "g": ".###..#.##.#.##", "h": "#.##.#####.##.#",
    "i": "###.#..#..#.###", "j": "..#..#..##.#.#.", "k": "#.##.###.#.##.#", "l": "#..#..#..#..###",
    "m": "#.#####.##.##.#", "n": "##.#.##.##.##.#", "o": ".#.#.##.##.#.#.", "p": "##.#.###.#..#..",
    "q": ".#.#.##.##.#.##", "r": "##.#.###.#.##.#", "s": ".###...#...###.", "t": "###.#..#..#..#.",
    "u": "#.##.##.##.####", "v": "#.##.##.##.#.#.", "w": "#.##.########.#", "x": "#.##.#.#.#.##.#",
    "y": "#.##.#.#..#..#.", "z": "###..#.#.#..###",
    "0": "####.##.##.####", "1": ".#.##..#..#.###", "2": "##...#.#.#..###", "3": "##...#.#...###.",
    "4": "#.##.####..#..#", "5": "####..##...###.", "6": ".###..####.####", "7": "###..#.#..#..#.",
    "8": "####.#####.####", "9": "####.####..###.",
    ".": "............#..", "_": "............###", "-": "......###......", " ": "...............",
    "(": ".#.#..#..#...#.", ",": "..........#.#..", ")": ".#...#..#..#.#.", ":": "....#.....#....", "/": "..#..#.#.#..#..",
}
WHITE, BLACK, GREY, BAR, WHISKER, REF = (255, 255, 255), (0, 0, 0), (200, 200, 200), (70, 130, 180), \
    (20, 20, 20), (200, 40, 40)
SCALE = 2


class Canvas:
    """An RGB pixel buffer."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.pix = bytearray(WHITE * (width * height))

    def rect(self, x0, y0, x1, y1, rgb):
        """Fill [x0, x1) x [y0, y1), clipped."""
        x0, x1 = max(0, int(x0)), min(self.width, int(x1))
        for y in range(max(0, int(y0)), min(self.height, int(y1))):
            start = (y * self.width + x0) * 3
            self.pix[start:start + (x1 - x0) * 3] = bytes(rgb) * max(0, x1 - x0)

    def text(self, x, y, string, rgb=BLACK):
        """Draw lowercase text at (x, y); returns its width."""
        for n, char in enumerate(string.lower()):
            glyph = FONT.get(char, FONT[" "]).ljust(15, ".")
            for k, ink in enumerate(glyph[:15]):
                if ink == "#":
                    gx = x + n * 4 * SCALE + (k % 3) * SCALE
                    gy = y + (k // 3) * SCALE
                    self.rect(gx, gy, gx + SCALE, gy + SCALE, rgb)
        return len(string) * 4 * SCALE

    def png(self):
        """The canvas as PNG bytes."""
        raw = b"".join(b"\x00" + bytes(self.pix[y * self.width * 3:(y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def axis(rows):
    """(low, high) of the logarithmic x axis: ticks around every row's range
    (a director-only ratio spans 1 to 40 between kernel paths and a
    userspace proxy; a log axis keeps the kernel paths apart)."""
    low = max(0.1, min([r[2] for r in rows] + [1.0]))
    high = max([r[3] for r in rows] + [2.0])
    return max([t for t in TICKS if t < low] or [TICKS[0]]), min([t for t in TICKS if t >= high] or [TICKS[-1]])


def position(value, low, high, left, width):
    """Pixel column of ``value`` on a log axis from ``low`` to ``high``."""
    value = min(max(value, low), high)
    return left + width * math.log(value / low) / math.log(high / low)


def draw(rows, title="director cpu per datagram: ratio to plain routing, log scale (bar median, whisker min-max)"):
    """A Canvas with one bar per (name, median, low, high) row."""
    label_w = max(len(r[0]) for r in rows) * 4 * SCALE + 20
    plot_w, bar_h, gap, top = 640, 18, 10, 40
    width = label_w + plot_w + 40
    height = top + len(rows) * (bar_h + gap) + 40
    canvas = Canvas(width, height)
    canvas.text(10, 10, title)
    low, high = axis(rows)

    def xpos(value):
        return position(value, low, high, label_w, plot_w)
    for tick in TICKS:
        if low <= tick <= high:
            canvas.rect(xpos(tick), top - 4, xpos(tick) + 1, height - 30, GREY)
            canvas.text(xpos(tick) - 4, height - 24, "%g" % tick)
    for n, (name, mid, least, most) in enumerate(rows):
        y = top + n * (bar_h + gap)
        canvas.text(10, y + 4, name)
        canvas.rect(label_w, y, xpos(mid), y + bar_h, BAR)
        canvas.rect(xpos(least), y + bar_h // 2 - 1, xpos(most) + 1, y + bar_h // 2 + 1, WHISKER)
        for end in (least, most):
            canvas.rect(xpos(end), y + 3, xpos(end) + 2, y + bar_h - 3, WHISKER)
        canvas.text(min(xpos(most) + 6, width - 40), y + 4, "%.2f" % mid)
    canvas.rect(xpos(1.0), top - 4, xpos(1.0) + 2, height - 30, REF)
    return canvas


def write(filename, rows):
    """Write the chart of ``rows`` [(name, median, min, max)] as PNG."""
    with open(filename, "wb") as out:
        out.write(draw(rows).png())
