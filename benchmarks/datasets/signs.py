"""Arrows, signs and symbols rendered from the installed typefaces: the traffic-sign case of a horizontal flip in
one small set. Some classes are mirror pairs (left / right arrow, < / >, ( / ), ...: a flip turns one into the
other, as it turns a keep-left sign into a keep-right one), some are mirror-symmetric (up arrow, heart, A: a flip
keeps them), some are neither (a note, ?, 7, R: a flip makes them into no class). Split by typeface design, as
glyphs.py: a test design is never seen in training."""
import functools
import os

from benchmarks.datasets import write_once
from benchmarks.datasets.glyphs import deal, installed_fonts

SIZE = 32
# class -> character; the kind of each is what a flip does to it (MIRROR_PAIRS: into the other of its pair)
MIRROR_PAIRS = (('left_arrow', '\u2190', 'right_arrow', '\u2192'),
                ('up_left_arrow', '\u2196', 'up_right_arrow', '\u2197'),
                ('down_left_arrow', '\u2199', 'down_right_arrow', '\u2198'), ('less', '<', 'greater', '>'),
                ('guillemet_left', '\u00ab', 'guillemet_right', '\u00bb'), ('paren_left', '(', 'paren_right', ')'))
SYMMETRIC = (('up_arrow', '\u2191'), ('down_arrow', '\u2193'), ('up_down_arrow', '\u2195'),
             ('left_right_arrow', '\u2194'), ('triangle_up', '\u25b2'), ('triangle_down', '\u25bc'),
             ('heart', '\u2665'), ('club', '\u2663'), ('upper_A', 'A'), ('upper_T', 'T'))
ASYMMETRIC = (('note', '\u266a'), ('section', '\u00a7'), ('pilcrow', '\u00b6'), ('question', '?'),
              ('ampersand', '&'), ('seven', '7'), ('four', '4'), ('upper_R', 'R'), ('upper_F', 'F'), ('upper_G', 'G'))
CHARS = {**{a: ca for a, ca, _, _ in MIRROR_PAIRS}, **{b: cb for _, _, b, cb in MIRROR_PAIRS}, **dict(SYMMETRIC),
         **dict(ASYMMETRIC)}
# the designs whose fonts draw every one of these characters (the others lack arrows, notes or card suits)
SIGN_DESIGNS = ('avantgarde', 'bookman', 'courier', 'dejavu-mono', 'dejavu-sans', 'dejavu-serif', 'helvetica',
                'palatino', 'schoolbook', 'times')
DESIGNS_IN = {'test': 3, 'val': 2}  # the rest (5) train
FONTS_PER_DESIGN = 3
RENDERS = 4  # each character drawn this many times per font: size, offset and rotation drawn anew


def kind(name):
    """What a horizontal flip does to class `name`: 'pair' (it becomes its partner), 'symmetric', 'asymmetric'."""
    return 'pair' if any(name in (a, b) for a, _, b, _ in MIRROR_PAIRS) else \
        'symmetric' if name in dict(SYMMETRIC) else 'asymmetric'


def partner(name):
    return next((b if name == a else a) for a, _, b, _ in MIRROR_PAIRS if name in (a, b))


def split_designs(seed=0):
    """{split: [(design, family, style, path)]}: SIGN_DESIGNS dealt at random by the seed to test, val and train,
    FONTS_PER_DESIGN of each design's fonts that draw every character."""
    fonts = {d: [f for f in found if draws_all(f[2])] for d, found in installed_fonts().items() if d in SIGN_DESIGNS}
    return deal(fonts, SIGN_DESIGNS, DESIGNS_IN, FONTS_PER_DESIGN, seed)


@functools.lru_cache(maxsize=None)
def draws_all(path):
    """Whether the font file draws every character of CHARS (a missing one renders as the font's empty box,
    the same as a private-use code point)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(path, 24)

    def ink(char):
        img = Image.new('L', (40, 40), 255)
        ImageDraw.Draw(img).text((20, 20), char, fill=0, font=font, anchor='mm')
        return np.asarray(img)
    missing = ink('\ue000')
    return all((ink(c) < 128).any() and not np.array_equal(ink(c), missing) for c in CHARS.values())


def build(root, seed=0):
    """root/signs: every class of CHARS drawn RENDERS times per font, black on white, 32 px, at a size of 18-25 px,
    offset up to 2 px and turned up to 5 degrees, all drawn by the seed; fonts.csv lists each split's fonts."""
    import csv
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    load = functools.lru_cache(maxsize=None)(ImageFont.truetype)

    def fill(folder):
        rows = []
        for split, fonts in split_designs(seed).items():
            for f, (design, family, style, path) in enumerate(fonts):
                rng = np.random.default_rng([seed, 7, len(rows)])
                rows.append([split, design, family, style, os.path.basename(path)])
                for name, char in sorted(CHARS.items()):
                    out = os.path.join(folder, split, name)
                    os.makedirs(out, exist_ok=True)
                    for r in range(RENDERS):
                        font = load(path, int(rng.integers(18, 26)))
                        img = Image.new('L', (SIZE, SIZE), 255)
                        dx, dy = rng.integers(-2, 3, 2)
                        ImageDraw.Draw(img).text((SIZE // 2 + dx, SIZE // 2 + dy), char, fill=0, font=font,
                                                 anchor='mm')
                        img = img.rotate(float(rng.uniform(-5, 5)), Image.BILINEAR, fillcolor=255)
                        img.save(os.path.join(out, f'{design}_{f:02d}_{r}.png'))
        with open(os.path.join(folder, 'fonts.csv'), 'w', newline='') as fh:
            csv.writer(fh).writerows([['split', 'design', 'family', 'style', 'file']] + rows)
    return write_once(root, 'signs', seed, fill)
