"""Where the package's data files are: config/ (parameters, embodiments) and checkpoints/.

One resolver for every such file, so that a colcon install (``share/dial_ros``, found
through the ament index), a pip install (``<prefix>/share/dial_ros``) and the source checkout
(the folder above this package) all find the same files. The first folder that holds the
file wins; a missing file is an error that lists every folder looked in. No rclpy here.
"""
import pathlib
import sys

PACKAGE = 'dial_ros'
SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent
BUNDLED_CHECKPOINT = 'dial_tiny_gr1'  # checkpoints/<name>: what checkpoint '' means
UNTRAINED = 'untrained'  # the checkpoint value that asks for an untrained tiny model


def data_roots():
    """Folders that may hold config/ and checkpoints/, in the order they are searched."""
    roots = []
    try:
        from ament_index_python.packages import get_package_share_directory
        roots.append(pathlib.Path(get_package_share_directory(PACKAGE)))
    except Exception:  # no ament index: plain venv, AMENT_PREFIX_PATH unset, not installed
        pass
    roots += [pathlib.Path(sys.prefix) / 'share' / PACKAGE, SOURCE_ROOT]
    unique = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def find(*parts, folder=False):
    """Return ``<root>/<parts...>`` of the first data root that has it (a file or a folder).

    FileNotFoundError names the file and every place looked in.
    """
    relative = pathlib.Path(*parts)
    tried = []
    for root in data_roots():
        path = root / relative
        if (path.is_dir() if folder else path.is_file()):
            return path
        tried.append(str(path))
    kind = 'folder' if folder else 'file'
    raise FileNotFoundError(f'{kind} {relative} of {PACKAGE} not found; looked in: '
                            + ', '.join(tried))


def config_file(*parts):
    """A file under config/, e.g. ``config_file('embodiments', 'gr1_sim.yaml')``."""
    return find('config', *parts)


def bundled_checkpoint():
    """The folder of the checkpoint the package ships (checkpoints/dial_tiny_gr1)."""
    try:
        return find('checkpoints', BUNDLED_CHECKPOINT, folder=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"the bundled checkpoint (what checkpoint '' means) is missing: "
                                f'{err}; give a checkpoint folder, or {UNTRAINED!r} for an '
                                'untrained model (sim only)') from None
