"""House rules enforced by tests: the core imports no ROS; no pickle; no print in the core."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'dial_ros'
ROS_MODULES = ('rclpy', 'std_msgs', 'sensor_msgs', 'trajectory_msgs', 'diagnostic_msgs',
               'rcl_interfaces', 'lifecycle_msgs', 'std_srvs', 'builtin_interfaces',
               'launch', 'launch_ros', 'dial_ros.msg', 'dial_ros.srv', 'dial_ros.nodes')
# ROS adapters and tools that exist to talk to ROS
ADAPTER_DIRS = ('nodes', 'launch_runner', 'bench', 'tools', 'bags', 'evaluate')


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def core_files():
    for path in ROOT.rglob('*.py'):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in ADAPTER_DIRS:
            yield path


def test_core_imports_no_ros():
    offenders = [(str(p.relative_to(ROOT)), m) for p in core_files() for m in imports(p)
                 if any(m == r or m.startswith(r + '.') for r in ROS_MODULES)]
    assert not offenders, offenders


def test_evaluation_statistics_and_splits_import_no_ros():
    """The evaluation's ROS side is episodes.py and graph.py; the rest stays core."""
    for name in ('metrics.py', 'splits.py'):
        found = [m for m in imports(ROOT / 'evaluate' / name)
                 if any(m == r or m.startswith(r + '.') for r in ROS_MODULES)]
        assert not found, (name, found)


def test_no_pickle_anywhere():
    offenders = [str(p) for p in ROOT.rglob('*.py')
                 if {'pickle', 'torch.load'} & set(imports(p))
                 or 'torch.load(' in p.read_text()]
    assert not offenders, offenders
