"""Put the visdom server's JS/CSS/font files in place from npm, so it starts offline.

`python -m visdom.server` downloads ~22 files from public CDNs at every start
(visdom/server/build.py) and crashes when the MathJax download fails. The same
files ship in npm packages; we fetch them once with `npm pack`, keep the tarballs
in a cache folder and copy each file to the name build.py expects. A matching
`static/version.built` then makes build.py skip its downloads.
"""
import importlib.util
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "classifier" / "npm"

# static/<path> -> (npm package, file inside its tarball); names as in visdom/server/build.py
ASSETS = {
    "js/jquery.min.js": ("jquery@3.1.1", "package/dist/jquery.min.js"),
    "js/bootstrap.min.js": ("bootstrap@3.3.7", "package/dist/js/bootstrap.min.js"),
    "js/react-react.min.js": ("react@16.2.0", "package/umd/react.production.min.js"),
    "js/react-dom.min.js": ("react-dom@16.2.0", "package/umd/react-dom.production.min.js"),
    "js/react-modal.min.js": ("react-modal@3.1.10", "package/dist/react-modal.min.js"),
    "js/plotly-plotly.min.js": ("plotly.js-dist-min@2.11.1", "package/plotly.min.js"),
    "js/sjcl.js": ("sjcl@1.0.7", "package/sjcl.js"),
    "js/layout-bin-packer.js.map": ("layout-bin-packer@1.4.0", "package/dist/layout-bin-packer.js.map"),
    "js/layout_bin_packer.js": ("layout-bin-packer@1.4.0", "package/dist/layout-bin-packer.js"),
    "js/d3.v3.min.js": ("d3@3.5.17", "package/d3.min.js"),
    # d3js.org serves the unminified build under this name
    "js/d3-selection-multi.v1.js": ("d3-selection-multi@1.0.1", "package/build/d3-selection-multi.js"),
    "js/saveSvgAsPng.js": ("save-svg-as-png@1.4.17", "package/lib/saveSvgAsPng.js"),
    "css/react-resizable-styles.css": ("react-resizable@1.4.6", "package/css/styles.css"),
    "css/react-grid-layout-styles.css": ("react-grid-layout@0.16.3", "package/css/styles.css"),
    "css/bootstrap.min.css": ("bootstrap@3.3.7", "package/dist/css/bootstrap.min.css"),
    # unpkg answers the bare package URL with its main file
    "fonts/classnames": ("classnames@2.2.5", "package/index.js"),
}
for _ext in ("eot", "woff2", "woff", "ttf"):
    ASSETS[f"fonts/glyphicons-halflings-regular.{_ext}"] = (
        "bootstrap@3.3.7", f"package/dist/fonts/glyphicons-halflings-regular.{_ext}")
# build.py keeps the URL fragment in the file name
ASSETS["fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"] = (
    "bootstrap@3.3.7", "package/dist/fonts/glyphicons-halflings-regular.svg")
for _path in ("MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js", "extensions/Safe.js",
              "jax/output/SVG/fonts/TeX/fontdata.js", "jax/output/SVG/jax.js",
              "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js", "jax/output/SVG/config.js"):
    ASSETS[f"js/mathjax/2.7.5/{_path}"] = ("mathjax@2.7.5", f"package/{_path}")


def visdom_static_dir():
    """The static folder the installed visdom server serves (found without importing visdom)."""
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise RuntimeError("visdom is not installed: pip install 'setuptools<82' && "
                           "pip install --no-build-isolation visdom")
    return Path(spec.origin).parent / "static"


def visdom_version():
    """visdom's version string exactly as build.py compares it with static/version.built."""
    version_file = Path(importlib.util.find_spec("visdom").origin).parent / "VERSION"
    if version_file.is_file():
        return version_file.read_text().strip()
    return "no_version_file"


def missing_assets(static_dir=None):
    """Relative paths (under static/) of the files the server needs that are not there yet."""
    static_dir = Path(static_dir or visdom_static_dir())
    return [rel for rel in ASSETS if not (static_dir / rel).is_file()]


def _user_css(static_dir):
    # index.html asks static_url() for "../user/style.css" (a handler serves the real one); without a
    # file at that path tornado logs "Could not open static file" on every page load
    return static_dir.parent / "user" / "style.css"


def is_built(static_dir=None):
    """True when every file is present and version.built stops build.py from downloading."""
    static_dir = Path(static_dir or visdom_static_dir())
    built = static_dir / "version.built"
    return (not missing_assets(static_dir) and built.is_file() and _user_css(static_dir).exists()
            and built.read_text().strip() == visdom_version())


def tarball_name(spec):
    """File name `npm pack NAME@VER` writes: name-ver.tgz (scoped @a/b -> a-b-ver.tgz)."""
    name, version = spec.rsplit("@", 1)
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch_tarballs(specs, cache_dir):
    """Download the npm tarballs for `specs` into cache_dir (skipping cached ones); return their paths."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not (cache_dir / tarball_name(s)).is_file()]
    if todo:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: install Node.js and npm (bash .ci/node.sh, or apt-get install npm) "
                               "so the visdom dashboard files can be fetched from the npm registry")
        # one call for all packages: npm's start-up dominates the time
        result = subprocess.run([npm, "pack", "--silent", *todo], cwd=cache_dir,
                                capture_output=True, text=True, timeout=600)
        lost = [s for s in todo if not (cache_dir / tarball_name(s)).is_file()]
        if result.returncode != 0 or lost:
            why = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"npm pack could not fetch {', '.join(lost or todo)} ({why}): check that the npm "
                               f"registry is reachable (npm config get registry) or copy the .tgz files into {cache_dir}")
    return {s: cache_dir / tarball_name(s) for s in specs}


def _extract(tarball, members, dests):
    """Copy `members` of one tarball to `dests`, writing through a temporary name so no half file remains."""
    with tarfile.open(tarball, "r:gz") as tar:
        for member, dest in zip(members, dests):
            source = tar.extractfile(member)
            if source is None:
                raise RuntimeError(f"{member} is missing in {tarball}: delete the file and run again")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)
            os.replace(tmp, dest)


def ensure_static(verbose=True, cache_dir=None, static_dir=None):
    """Make sure every file the visdom server needs is in its static folder; return that folder.

    Fetches only what is missing (npm tarballs cached in `cache_dir`, default
    ~/.cache/classifier/npm), then writes version.built. Fast no-op when done.
    """
    static_dir = Path(static_dir or visdom_static_dir())
    if is_built(static_dir):
        return static_dir
    if not os.access(static_dir if static_dir.exists() else static_dir.parent, os.W_OK):
        raise RuntimeError(f"cannot write to visdom's static folder {static_dir}: run this once as its owner "
                           "(python -c 'from utils.dashboard.assets import ensure_static; ensure_static()')")
    missing = missing_assets(static_dir)
    by_package = {}
    for rel in missing:
        spec, member = ASSETS[rel]
        by_package.setdefault(spec, []).append((member, static_dir / rel))
    if verbose and missing:
        print(f"visdom: fetching {len(missing)} dashboard files from npm ({len(by_package)} packages)")
    tarballs = fetch_tarballs(sorted(by_package), cache_dir or DEFAULT_CACHE)
    for spec, pairs in by_package.items():
        members, dests = zip(*pairs)
        _extract(tarballs[spec], members, dests)
    if not _user_css(static_dir).exists():
        _user_css(static_dir).parent.mkdir(exist_ok=True)
        _user_css(static_dir).touch()
    (static_dir / "version.built").write_text(visdom_version())
    if verbose:
        print(f"visdom: dashboard files ready in {static_dir}")
    return static_dir
