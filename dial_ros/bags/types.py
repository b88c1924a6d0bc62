"""Message definitions (schema text and RIHS01 hash) for any ROS 2 type, without rclpy.

A bag stores, per topic, the type's definition text (the ``ros2msg`` schema of MCAP: the
type's fields, then each dependency after a line of 80 '=' and ``MSG: pkg/Type``) and its
type hash, so that readers (rosbags, the mcap decoders, Foxglove, ``ros2 bag``) decode it
without the type installed. Definitions come from, in order:

1. rosbags' ROS 2 Kilted type store (all common interface packages);
2. this project's ``msg/*.msg`` (source checkout or the installed ``share/dial_ros/msg``);
3. ``share/<pkg>/msg/<Type>.msg`` under ``sys.prefix`` and every ``AMENT_PREFIX_PATH`` entry,
   loaded with their dependencies on first use.
"""
import logging
import os
import pathlib
import re
import sys
import threading

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.base import TypesysError

LOG = logging.getLogger(__name__)
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
# rosbags cannot parse an empty string constant (``string OUTCOME_UNKNOWN=``); quote it.
_EMPTY_CONSTANT = re.compile(r'(?m)^(\s*string\s+[A-Z][A-Z0-9_]*\s*=)\s*$')
_UNKNOWN = re.compile(r"Type '([\w/]+)' is unknown")


def normalise_type(name):
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``; ValueError for other forms."""
    parts = name.strip().split('/')
    if len(parts) == 2 and all(parts):
        return f'{parts[0]}/msg/{parts[1]}'
    if len(parts) == 3 and all(parts) and parts[1] == 'msg':
        return name.strip()
    raise ValueError(f'message type {name!r}: expected pkg/msg/Type')


def msg_search_dirs():
    """Folders that may hold ``<pkg>/msg/<Type>.msg`` (share folders of installed packages)."""
    dirs = [pathlib.Path(sys.prefix) / 'share']
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            dirs.append(pathlib.Path(prefix) / 'share')
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


class MessageTypes:
    """Resolve ``pkg/msg/Type`` -> (definition text, RIHS01 hash); thread-safe, cached."""

    def __init__(self, extra_dirs=()):
        self._lock = threading.Lock()
        self._store = get_typestore(Stores.ROS2_KILTED)
        self._cache = {}
        self._dirs = [pathlib.Path(d) for d in extra_dirs] + msg_search_dirs()
        own = ROOT / 'msg'
        if own.is_dir():
            self._register_dir('dial_ros', own)

    def _register_dir(self, package, folder):
        for path in sorted(pathlib.Path(folder).glob('*.msg')):
            self._register_file(f'{package}/msg/{path.stem}', path)

    def _register_file(self, msgtype, path):
        text = _EMPTY_CONSTANT.sub(r'\1""', path.read_text())
        try:
            self._store.register(get_types_from_msg(text, msgtype))
        except TypesysError as err:
            raise ValueError(f'{msgtype}: cannot parse {path}: {err}') from None

    def _find_file(self, msgtype):
        package, _, name = msgtype.split('/')
        for folder in self._dirs:
            path = folder / package / 'msg' / f'{name}.msg'
            if path.is_file():
                return path
        return None

    @property
    def store(self):
        """The rosbags typestore (Kilted + the types resolved so far)."""
        return self._store

    def deserialize(self, data, msgtype):
        """CDR bytes -> a rosbags message object; ValueError for an unknown type."""
        self.definition(msgtype)
        return self._store.deserialize_cdr(data, normalise_type(msgtype))

    def known(self, msgtype):
        """True when the definition of ``msgtype`` can be resolved."""
        try:
            self.definition(msgtype)
            return True
        except ValueError:
            return False

    def definition(self, msgtype):
        """Return ``(text, rihs01)`` of ``msgtype``; ValueError naming a missing type."""
        msgtype = normalise_type(msgtype)
        with self._lock:
            if msgtype in self._cache:
                return self._cache[msgtype]
            tried = set()
            while True:
                try:
                    text, _ = self._store.generate_msgdef(msgtype, ros_version=2)
                    digest = self._store.hash_rihs01(msgtype)
                    break
                except (TypesysError, KeyError) as err:
                    match = _UNKNOWN.search(str(err))
                    missing = normalise_type(match.group(1)) if match else msgtype
                    path = None if missing in tried else self._find_file(missing)
                    if path is None:
                        raise ValueError(
                            f'message type {missing!r} (needed for {msgtype}) is unknown: not '
                            f'in the Kilted type store, msg/, nor in '
                            f'{[str(d) for d in self._dirs]}') from None
                    tried.add(missing)
                    LOG.debug('loading %s from %s', missing, path)
                    self._register_file(missing, path)
            self._cache[msgtype] = (text, digest)
            return text, digest


_DEFAULT = []
_DEFAULT_LOCK = threading.Lock()


def default_types():
    """A process-wide MessageTypes."""
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(MessageTypes())
        return _DEFAULT[0]
