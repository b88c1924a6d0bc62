"""The package builds with colcon (ament_cmake) into a complete install tree.

Builds the checkout with the venv's colcon into a temporary workspace (about 12 s on two
cores) and checks what a real install needs: package.xml, the generated message modules,
the Python package, the `ros2 run` wrappers and the ament index entry.
"""
import os
from pathlib import Path
import shutil
import subprocess
import sys

from catkin_pkg.package import parse_package
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / '.venv'
NODES = ['perception', 'intent', 'controller', 'sim', 'expert', 'recorder']
PY_DIR = f'lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages'


def test_package_xml_is_format_3_and_parses():
    package = parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3
    assert package.name == 'dial_ros'
    assert package.get_build_type() == 'ament_cmake'
    assert 'rosidl_interface_packages' in [g.name for g in package.member_of_groups]
    build_tools = {d.name for d in package.buildtool_depends}
    assert {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators'} <= build_tools
    import dial_ros
    assert package.version == dial_ros.__version__


@pytest.fixture(scope='module')
def install_prefix(tmp_path_factory):
    """Run `colcon build` on the checkout in a temporary workspace; return the install prefix."""
    colcon = VENV / 'bin' / 'colcon'
    if not colcon.exists() or shutil.which('cmake') is None:
        pytest.skip('needs the venv colcon and cmake (scripts/setup.sh)')
    ws = tmp_path_factory.mktemp('colcon_ws')
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), AMENT_PREFIX_PATH=str(VENV),
               CMAKE_PREFIX_PATH=str(VENV), COLCON_HOME=str(ws / 'colcon_home'),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ.get("PATH", "")}',
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    cmd = [str(colcon), '--log-base', 'tmp/log', 'build', '--base-paths', str(ROOT),
           '--build-base', 'tmp/build', '--install-base', 'tmp/install',
           '--cmake-args', f'-DPython3_EXECUTABLE={VENV / "bin" / "python"}',
           '-DBUILD_TESTING=OFF']
    out = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f'colcon build failed:\n{out.stdout[-6000:]}\n{out.stderr}'
    return ws / 'tmp' / 'install' / 'dial_ros'


def test_install_tree_has_package_xml_and_index(install_prefix):
    assert (install_prefix / 'share' / 'dial_ros' / 'package.xml').is_file()
    assert (install_prefix / 'share/ament_index/resource_index/packages/dial_ros').is_file()
    assert (install_prefix / 'share/ament_index/resource_index/rosidl_interfaces/dial_ros'
            ).is_file()
    for name in ('LatentTensor', 'ActionChunk', 'EpisodeEvent'):
        assert (install_prefix / 'share' / 'dial_ros' / 'msg' / f'{name}.msg').is_file()


def test_install_tree_has_python_package_and_messages(install_prefix):
    pkg = install_prefix / PY_DIR / 'dial_ros'
    init = (pkg / '__init__.py').read_text()
    assert 'extend_path' in init and '__version__' in init
    for module in ('_latent_tensor.py', '_action_chunk.py', '_episode_event.py'):
        assert (pkg / 'msg' / module).is_file()
    assert list(pkg.glob('dial_ros_s__rosidl_typesupport_c*.so'))
    sources = {p.relative_to(ROOT / 'dial_ros') for p in (ROOT / 'dial_ros').rglob('*.py')
               if '__pycache__' not in p.parts}
    assert sources and all((pkg / p).is_file() for p in sources)
    # package data: the distilled vision tower (VLMConfig.tiny_vision_init)
    assert (pkg / 'model' / 'weights' / 'tiny_vit_effnet_lite0.safetensors').is_file()


def test_install_tree_has_node_wrappers(install_prefix):
    for node in NODES:
        wrapper = install_prefix / 'lib' / 'dial_ros' / node
        assert wrapper.is_file() and os.access(wrapper, os.X_OK), wrapper
        text = wrapper.read_text()
        assert text.startswith('#!/') and f'from dial_ros.nodes.{node} import main' in text
        compile(text, str(wrapper), 'exec')


def test_install_tree_imports_and_is_indexed(install_prefix, tmp_path):
    code = ('import dial_ros, dial_ros.msg as m; m.LatentTensor(); m.ActionChunk(); '
            'from ament_index_python.packages import get_package_prefix; '
            'print(m.__file__); print(get_package_prefix("dial_ros"))')
    env = dict(os.environ, PYTHONPATH=str(install_prefix / PY_DIR),
               LD_LIBRARY_PATH=str(install_prefix / 'lib'),
               AMENT_PREFIX_PATH=f'{install_prefix}{os.pathsep}{VENV}')
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)  # let the venv add its library paths
    out = subprocess.run([str(VENV / 'bin' / 'python'), '-c', code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    msg_file, prefix = out.stdout.split()
    assert Path(msg_file).is_relative_to(install_prefix)
    assert Path(prefix) == install_prefix
