"""Natural-photo patches cut from the photographs of Debian's wallpaper packages, one class per photograph.

Each photograph is scaled to a fixed short side and divided into a grid of cells; the cells are dealt, at
random by the seed, to train, val and test, and every patch lies inside one cell, so a test patch never shares a
pixel with a training patch of its photo (test images come from other regions of the same photos, as a user's
later pictures of the same scenes would). A patch's side is drawn from a range of the cell's, so the scale
varies, and it is resized to the dataset's image size. patches.csv records each patch's box in the scaled
photograph.
"""
import csv
import os

from benchmarks.datasets import write_once
from config import UserError

MATE = '/usr/share/backgrounds/mate/nature/'
# The 10 photographs of mate-backgrounds' nature folder (its other folders hold illustrations); its two
# near-uniform textures (GreenMeadow, Wood) are left out.
PHOTOS = {name.lower(): (MATE + name + '.jpg', 'mate-backgrounds') for name in
          ('Aqua', 'Blinds', 'Dune', 'FreshFlower', 'Garden', 'LadyBird', 'RainDrops', 'Storm', 'TwoWings',
           'YellowFlower')}
# Landscape photographs of lomiri-wallpapers and plasma-workspace-wallpapers (their other files are renders,
# illustrations or portrait-format); other scenes than PHOTOS'.
SCENES = {name.split('_')[0].lower(): ('/usr/share/backgrounds/' + name, 'lomiri-wallpapers') for name in
          ('Bridge_by_Sander_Klootwijk.jpg', 'Dragonfly_by_Bolly.jpg', 'aitzgorri_by_Aitzol_Berasategi.jpg',
           'life_by_Aitzol_Berasategi.jpg', 'picosdeeuropa_by_Aitzol_Berasategi.jpg',
           'seeding_by_Clements_Engelhardt.jpg', 'sunset_by_Aitzol_Berasategi.jpg', 'Kleiber_by_Lukas_Baubkus.jpg')}
SCENES.update({name.lower(): (f'/usr/share/wallpapers/{name}/contents/images/1920x1080.jpg',
                              'plasma-workspace-wallpapers') for name in ('EveningGlow', 'Path')})
GRID = (4, 3)  # columns, rows of cells
CELLS = {'train': 7, 'val': 2, 'test': 3}


def build(root, seed=0):
    """root/photos: 40 px patches of 10 photographs; training counts long-tailed from 120 down to 12 (a
    geometric series over the classes, in an order drawn by the seed); 10 val and 30 test patches per class."""
    def counts(k, n):
        return {'train': round(120 * 0.1 ** (k / (n - 1))), 'val': 10, 'test': 30}
    return write_once(root, 'photos', seed, lambda folder: cut(folder, PHOTOS, 40, 400, (0.4, 0.9), counts, seed))


def build_scenes96(root, seed=0):
    """root/scenes96: 96 px patches of 10 other photographs, 30 train, 10 val and 20 test per class."""
    return write_once(root, 'scenes96', seed, lambda folder: cut(folder, SCENES, 96, 480, (0.6, 1.0),
                                                                lambda k, n: {'train': 30, 'val': 10, 'test': 20},
                                                                seed))


def cut(folder, photos, size, short_side, scale, counts, seed):
    """Write folder/<split>/<class>/*.png patches of each photograph and folder/patches.csv."""
    import numpy as np
    from PIL import Image
    missing = sorted({package for path, package in photos.values() if not os.path.exists(path)})
    if missing:
        raise UserError(f'photographs not installed: run apt-get install {" ".join(missing)}')
    names = sorted(photos)
    order = np.random.default_rng(seed).permutation(len(names))  # which class gets which training count
    rows = []
    for k, i in enumerate(order):
        name = names[i]
        rng = np.random.default_rng([seed, int(i)])
        with Image.open(photos[name][0]) as img:
            img = img.convert('RGB')
            factor = short_side / min(img.size)
            img = img.resize((round(img.width * factor), round(img.height * factor)), Image.LANCZOS)
        cw, ch = img.width // GRID[0], img.height // GRID[1]
        cells = [(c * cw, r * ch) for r in range(GRID[1]) for c in range(GRID[0])]
        dealt = rng.permutation(len(cells))
        start = 0
        for split, n in counts(k, len(names)).items():
            mine = [cells[j] for j in dealt[start:start + CELLS[split]]]
            start += CELLS[split]
            out = os.path.join(folder, split, name)
            os.makedirs(out)
            for m in range(n):
                x0, y0 = mine[m % len(mine)]
                side = int(rng.integers(round(scale[0] * min(cw, ch)), round(scale[1] * min(cw, ch)) + 1))
                left, top = x0 + int(rng.integers(0, cw - side + 1)), y0 + int(rng.integers(0, ch - side + 1))
                box = (left, top, left + side, top + side)
                file = f'{name}_{split}_{m:03d}.png'
                img.resize((size, size), Image.BICUBIC, box=box).save(os.path.join(out, file))
                rows.append([split, name, file, *box])
    with open(os.path.join(folder, 'patches.csv'), 'w', newline='') as f:
        csv.writer(f).writerows([['split', 'class', 'file', 'left', 'top', 'right', 'bottom']] + rows)
