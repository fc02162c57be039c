"""The bundled demo: scikit-learn's real handwritten digits written as PNG class folders."""
import os
import shutil
import tempfile

DEMO_ROOT = os.path.join('data', 'demo')
SIZE = 32


def ensure_demo(root=DEMO_ROOT, seed=0):
    """Write data/demo/{train,val,test}/<digit>/*.png once (1797 images, stratified 68/12/20 %, seeded)."""
    if os.path.exists(os.path.join(root, '.complete')):
        return root
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    idx = np.arange(len(images))
    rest, test = train_test_split(idx, test_size=0.2, stratify=digits.target, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15, stratify=digits.target[rest], random_state=seed)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.demo-')
    for split, members in (('train', train), ('val', val), ('test', test)):
        for i in members:
            folder = os.path.join(tmp, split, str(digits.target[i]))
            os.makedirs(folder, exist_ok=True)
            img = Image.fromarray(images[i], 'L').resize((SIZE, SIZE), Image.BICUBIC)
            img.save(os.path.join(folder, f'{i:04d}.png'))
    open(os.path.join(tmp, '.complete'), 'w').close()
    if os.path.exists(root):  # an interrupted earlier write: replace it
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root
