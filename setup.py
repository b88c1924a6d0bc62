"""Python install of dial_ros for a plain virtual environment (scripts/setup.sh).

Under colcon the package builds with ament_cmake (CMakeLists.txt), which also generates the
interfaces in msg/ and installs this same Python package; this file is the pip view of it.
"""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'dial_ros'
CHECKPOINT = 'checkpoints/dial_tiny_gr1'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    # the distilled vision tower (VLMConfig.tiny_vision_init); colcon installs the whole
    # source folder (CMakeLists.txt), the editable install reads it in place
    package_data={PACKAGE: ['model/weights/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')),
        ('share/' + PACKAGE + '/config/embodiments', glob('config/embodiments/*.yaml')),
        # the bundled checkpoint, found through dial_ros.paths like the config files
        (f'share/{PACKAGE}/{CHECKPOINT}',
         [p for p in glob(CHECKPOINT + '/*') if os.path.isfile(p)]),
        (f'share/{PACKAGE}/{CHECKPOINT}/vlm', glob(CHECKPOINT + '/vlm/*')),
    ],
    install_requires=['numpy', 'PyYAML', 'safetensors', 'transformers', 'tokenizers', 'pillow'],
    zip_safe=True,
    maintainer='dial_ros developers',
    maintainer_email='dial-ros@example.com',
    description='DIAL dual-system VLA on a humanoid with ROS 2',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'dial-ros-launch = dial_ros.launch_runner:main',
            'dial-ros-perception = dial_ros.nodes.perception:main',
            'dial-ros-intent = dial_ros.nodes.intent:main',
            'dial-ros-controller = dial_ros.nodes.controller:main',
            'dial-ros-sim = dial_ros.nodes.sim:main',
            'dial-ros-expert = dial_ros.nodes.expert:main',
            'dial-ros-recorder = dial_ros.nodes.recorder:main',
            'dial-ros-replay = dial_ros.nodes.replay:main',
            'dial-ros-episodes = dial_ros.nodes.episodes:main',
            'dial-ros-surprise = dial_ros.nodes.surprise:main',
            'dial-ros-bag = dial_ros.bags.__main__:main',
            'dial-ros-foresight-view = dial_ros.nodes.foresight_view:main',
        ],
    },
)
