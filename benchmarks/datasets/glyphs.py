"""Character glyphs in the manner of the Chars74K font set: 62 classes 0-9 A-Z a-z rendered with Pillow from the
installed font families, split into train / val / test by typeface design, so that a test font is never seen in
training. Metric clones of one design (Nimbus Sans, FreeSans, Liberation Sans and Arimo all follow Helvetica /
Arial) form one design and never straddle the split."""
import functools
import glob
import os
import string

from benchmarks.datasets import write_once
from config import UserError

SIZE = 32
CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase
# design -> the font families (as the font files name themselves) that draw it. Families not listed here are
# ignored, so that installing another font package does not change the dataset.
DESIGNS = {
    'helvetica': ('Nimbus Sans', 'Nimbus Sans Narrow', 'FreeSans', 'Liberation Sans', 'Liberation Sans Narrow',
                  'Arimo'),
    'times': ('Nimbus Roman', 'FreeSerif', 'Liberation Serif', 'Tinos'),
    'courier': ('Nimbus Mono PS', 'FreeMono'), 'cousine': ('Liberation Mono', 'Cousine'),
    'bookman': ('URW Bookman',), 'avantgarde': ('URW Gothic',), 'palatino': ('P052',), 'schoolbook': ('C059',),
    'chancery': ('Z003',), 'dejavu-sans': ('DejaVu Sans',), 'dejavu-mono': ('DejaVu Sans Mono', 'Hack'),
    'dejavu-serif': ('DejaVu Serif',), 'accanthis': ('Accanthis ADF Std', 'Accanthis ADF Std No2',
                                                     'Accanthis ADF Std No3'),
    'cabin': ('Cabin',), 'caladea': ('Caladea',), 'cantarell': ('Cantarell',), 'carlito': ('Carlito',),
    'comic-neue': ('Comic Neue',), 'eb-garamond': ('EB Garamond',), 'go': ('Go', 'Go Medium'),  # not Go Smallcaps
    'go-mono': ('Go Mono',), 'inconsolata': ('Inconsolata',), 'lato': ('Lato',),
    'noto-mono': ('Noto Mono', 'Noto Sans Mono'), 'open-sans': ('Open Sans', 'Open Sans Condensed'),
    'oxygen': ('Oxygen-Sans', 'Oxygen Mono'), 'pt-sans': ('PT Sans', 'PT Sans Caption', 'PT Sans Narrow'),
    'pt-serif': ('PT Serif', 'PT Serif Caption'), 'pt-mono': ('PT Mono',), 'quicksand': ('Quicksand',
                                                                                        'Quicksand Light',
                                                                                        'Quicksand Medium'),
}
PACKAGES = ('fonts-urw-base35 fonts-freefont-ttf fonts-liberation fonts-croscore fonts-dejavu-core '
            'fonts-dejavu-extra fonts-hack fonts-adf-accanthis fonts-cabin fonts-crosextra-caladea '
            'fonts-cantarell fonts-crosextra-carlito fonts-comic-neue fonts-ebgaramond fonts-go fonts-inconsolata '
            'fonts-lato fonts-noto-mono fonts-open-sans fonts-oxygen fonts-paratype fonts-quicksand')
FONTS_PER_DESIGN = 3  # styles drawn per design, so that the big families do not outweigh the others
DESIGNS_IN = {'test': 8, 'val': 4}  # the rest train


def class_name(char):
    """Folder name of a character: digits as they are, letters upper_A / lower_a (file systems that ignore case
    would merge A and a)."""
    return char if char.isdigit() else ('upper_' if char.isupper() else 'lower_') + char


def installed_fonts(fonts_dir='/usr/share/fonts'):
    """{design: [(family, style, path)]} of the installed font files, one file per family and style."""
    from PIL import ImageFont
    family_design = {f: d for d, families in DESIGNS.items() for f in families}
    found, seen = {}, set()
    for path in sorted(glob.glob(os.path.join(fonts_dir, '**', '*.[ot]tf'), recursive=True)):
        family, style = ImageFont.truetype(path, SIZE).getname()
        if family in family_design and (family, style) not in seen:
            seen.add((family, style))
            found.setdefault(family_design[family], []).append((family, style, path))
    missing = sorted(set(DESIGNS) - set(found))
    if missing:
        raise UserError(f'font designs not installed ({", ".join(missing)}): run apt-get install {PACKAGES}')
    return found


def split_designs(seed=0):
    """{split: [(design, family, style, path)]}: the designs dealt at random by the seed to test, val and train,
    FONTS_PER_DESIGN styles drawn from each."""
    return deal(installed_fonts(), DESIGNS, DESIGNS_IN, FONTS_PER_DESIGN, seed)


def deal(fonts, designs, designs_in, per_design, seed):
    """{split: [(design, family, style, path)]}: `designs` dealt at random by the seed, designs_in['test'] to test,
    designs_in['val'] to val, the rest to train, and `per_design` of each design's `fonts` (design: [(family,
    style, path)]) drawn for it."""
    import numpy as np
    rng = np.random.default_rng(seed)
    order = [sorted(designs)[i] for i in rng.permutation(len(designs))]
    cut = {'test': order[:designs_in['test']], 'val': order[designs_in['test']:sum(designs_in.values())],
           'train': order[sum(designs_in.values()):]}
    return {split: [(d, *fonts[d][i]) for d in sorted(members)
                    for i in sorted(rng.permutation(len(fonts[d]))[:per_design])]
            for split, members in cut.items()}


def build(root, seed=0):
    """root/glyphs: each of the 62 characters once per font, black on white, 32 px, at a size (20-24 px) and
    offset (+-1 px) drawn by the seed, on a common baseline (so that x and X differ in size, as in text);
    fonts.csv lists each split's fonts."""
    import csv
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    load = functools.lru_cache(maxsize=None)(ImageFont.truetype)  # a font file is parsed once per size

    def fill(folder):
        rows = []
        for split, fonts in split_designs(seed).items():
            for f, (design, family, style, path) in enumerate(fonts):
                rng = np.random.default_rng([seed, len(rows)])
                rows.append([split, design, family, style, os.path.basename(path)])
                for char in CHARS:
                    font = load(path, int(rng.integers(20, 25)))
                    img = Image.new('L', (SIZE, SIZE), 255)
                    dx, dy = rng.integers(-1, 2, 2)
                    ImageDraw.Draw(img).text((SIZE // 2 + dx, 25 + dy), char, fill=0, font=font, anchor='ms')
                    out = os.path.join(folder, split, class_name(char))
                    os.makedirs(out, exist_ok=True)
                    img.save(os.path.join(out, f'{design}_{f:02d}.png'))
        with open(os.path.join(folder, 'fonts.csv'), 'w', newline='') as fh:
            csv.writer(fh).writerows([['split', 'design', 'family', 'style', 'file']] + rows)
    return write_once(root, 'glyphs', seed, fill)
