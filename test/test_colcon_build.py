"""The package builds with colcon (ament_cmake) into a complete install tree.

Builds the checkout with the venv's colcon into a temporary workspace (about 12 s on two
cores) and checks what a real install needs: package.xml, the generated message modules,
the Python package, the `ros2 run` wrappers, the ament index entry, config/ and the bundled
checkpoint; and that the launch run from the install loads that checkpoint.
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
NODES = ['perception', 'intent', 'controller', 'sim', 'expert', 'recorder', 'foresight_view']
NODES += ['surprise']  # the surprise monitor (issue 12)
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


def test_install_tree_has_the_bundled_checkpoint_and_config(install_prefix):
    share = install_prefix / 'share' / 'dial_ros'
    for name in ('dial_config.yaml', 'model.safetensors', 'vlm/config.json',
                 'vlm/tokenizer.json'):
        assert (share / 'checkpoints' / 'dial_tiny_gr1' / name).is_file(), name
    for name in ('humanoid.yaml', 'eval_splits.yaml', 'fastdds_shm.xml', 'fastdds_udp.xml',
                 'embodiments/gr1_sim.yaml'):
        assert (share / 'config' / name).is_file(), name
    assert (share / 'launch' / 'humanoid.launch.py').is_file()


def install_env(install_prefix, **extra):
    """The environment of a sourced install: its Python package, libraries and index first."""
    env = dict(os.environ, PYTHONPATH=str(install_prefix / PY_DIR),
               LD_LIBRARY_PATH=str(install_prefix / 'lib'),
               AMENT_PREFIX_PATH=f'{install_prefix}{os.pathsep}{VENV}',
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', OMP_NUM_THREADS='1',
               PYTHONUNBUFFERED='1', **extra)
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)  # let the venv add its library paths
    return env


def test_installed_package_finds_its_data_in_the_install(install_prefix, tmp_path):
    code = ('from dial_ros import paths; print(paths.bundled_checkpoint()); '
            'print(paths.config_file("embodiments", "gr1_sim.yaml"))')
    out = subprocess.run([str(VENV / 'bin' / 'python'), '-c', code], cwd=tmp_path,
                         env=install_env(install_prefix), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert Path(line).is_relative_to(install_prefix / 'share' / 'dial_ros'), line


@pytest.mark.ros
@pytest.mark.slow
def test_launch_from_the_install_runs_the_bundled_checkpoint(install_prefix, tmp_path):
    """`ros2 launch dial_ros humanoid.launch.py` from the install (here through the runner,
    which resolves the launch file, config and node wrappers through the ament index): the
    controller reports the bundled checkpoint's model id, not an untrained model's."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph import diagnostic_value, domain_id, pids_of, RosPeer, stop
    domain = domain_id('colcon_launch')
    log = tmp_path / 'launch.log'
    cmd = [str(VENV / 'bin' / 'python'), '-m', 'dial_ros.launch_runner', 'dial_ros',
           'humanoid.launch.py', 'sim:=false', 'duration:=180']
    with open(log, 'w') as stream:
        launch = subprocess.Popen(cmd, cwd=tmp_path, stdout=stream, stderr=subprocess.STDOUT,
                                  env=install_env(install_prefix, ROS_DOMAIN_ID=str(domain)),
                                  start_new_session=True)
    peer = RosPeer(domain)
    try:
        diagnostics = peer.collect(DiagnosticArray, '/diagnostics', 10, stamped=False)

        def model_id():
            return diagnostic_value(diagnostics, '/controller', 'model_id')
        assert peer.spin_until(lambda: model_id() is not None, 150), log.read_text()[-4000:]
        # the node runs from the install's `ros2 run` wrapper, not the source checkout
        assert pids_of(str(install_prefix / 'lib' / 'dial_ros' / 'controller'), domain)
    finally:
        peer.close()
        stop(launch)
    assert model_id().startswith('dial_tiny_gr1@'), model_id()
