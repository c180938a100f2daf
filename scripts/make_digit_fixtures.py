"""Writes digit pictures that never came from MNIST, for predict's tests and report.

    python scripts/make_digit_fixtures.py --folder=tests/fixtures/digits

Two sets, dark ink on white paper, of various sizes and placements, named
<digit>_<how>.png: ten digits rendered from the DejaVu Sans font (off centre on wide
canvases), and ten drawn with pen strokes, as a hand would, on canvases from 60 to 600
pixels. Deterministic: the same files every time.
"""

import os

from absl import flags
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf'

# Pen strokes on a 100 x 140 grid: each digit a list of polylines.
STROKES = {
    0: [[(50, 15), (25, 35), (20, 70), (25, 105), (50, 125), (75, 105), (80, 70), (75, 35),
         (50, 15)]],
    1: [[(35, 35), (55, 15), (55, 125)]],
    2: [[(22, 40), (35, 18), (60, 15), (78, 35), (72, 62), (22, 122), (82, 122)]],
    3: [[(22, 25), (50, 15), (75, 30), (70, 58), (45, 68)], [(45, 68), (75, 82), (78, 108),
                                                             (50, 125), (20, 112)]],
    4: [[(65, 125), (65, 15), (18, 90), (85, 90)]],
    5: [[(78, 15), (28, 15), (23, 62), (55, 55), (78, 75), (75, 108), (50, 125), (20, 112)]],
    6: [[(72, 18), (40, 35), (24, 75), (28, 110), (52, 125), (74, 108), (74, 82), (52, 68),
         (26, 82)]],
    7: [[(18, 18), (82, 18), (42, 125)]],
    8: [[(50, 68), (26, 50), (30, 24), (50, 15), (70, 24), (74, 50), (50, 68), (24, 90),
         (30, 118), (50, 126), (70, 118), (76, 90), (50, 68)]],
    9: [[(74, 58), (50, 70), (27, 55), (30, 25), (52, 15), (74, 30), (74, 58), (68, 100),
         (45, 126)]],
}


def rendered(digit, index):
    width, height = 160 + 40 * index, 200 + 20 * (index % 3)
    image = Image.new('L', (width, height), 255)
    font = ImageFont.truetype(FONT, 120 + 8 * (index % 4))
    draw = ImageDraw.Draw(image)
    draw.text((20 + 13 * index, 20 + 5 * (index % 5)), str(digit), fill=25, font=font)
    return image


def drawn(digit, index):
    size = [60, 90, 140, 200, 260, 320, 380, 440, 520, 600][index]
    image = Image.new('L', (size, int(size * 1.25)), 245)
    draw = ImageDraw.Draw(image)
    scale = size / 140
    offset = (size * 0.15 * (index % 3 - 1), size * 0.05 * (index % 2))
    for line in STROKES[digit]:
        points = [(offset[0] + size * 0.15 + x * scale, offset[1] + size * 0.1 + y * scale)
                  for x, y in line]
        draw.line(points, fill=20, width=max(2, int(size / 14)), joint='curve')
    return image


def main(argv):
    del argv
    folder = flags.FLAGS.folder
    os.makedirs(folder, exist_ok=True)
    for digit in range(10):
        rendered(digit, digit).save(os.path.join(folder, f'{digit}_font.png'))
        drawn(digit, digit).save(os.path.join(folder, f'{digit}_pen.png'))
    print(f'20 digits written to {folder}')
    return 0


if __name__ == '__main__':
    from graph_mnist import cli
    cli.run(main, lambda: flags.DEFINE_string('folder', 'tests/fixtures/digits',
                                              'Where to write the 20 PNG files.'))
