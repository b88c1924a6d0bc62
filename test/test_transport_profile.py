"""The Fast DDS shared-memory profile (config/fastdds_shm.xml): content, safety, real delivery."""
import os
import pathlib
import time
import xml.etree.ElementTree as ET

import pytest

import dial_ros
from dial_ros.bench import latent_transport

PROFILE = pathlib.Path(__file__).resolve().parent.parent / 'config' / 'fastdds_shm.xml'
NS = {'f': 'http://www.eprosima.com'}
LOOPBACK = {'127.0.0.1', 'lo'}
VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'


def _profile():
    return ET.parse(PROFILE).getroot()


def _descriptors(root):
    return {d.findtext('f:transport_id', namespaces=NS): d
            for d in root.iterfind('.//f:transport_descriptor', NS)}


def _default_participant(root):
    found = [p for p in root.iterfind('.//f:participant', NS)
             if p.get('is_default_profile') == 'true']
    assert len(found) == 1, 'exactly one default participant profile'
    return found[0]


def test_profile_parses_and_names_the_shm_transport_and_segment_size():
    root = _profile()
    assert root.tag == '{http://www.eprosima.com}dds'
    shm = [d for d in _descriptors(root).values() if d.findtext('f:type', namespaces=NS) == 'SHM']
    assert len(shm) == 1
    segment = int(shm[0].findtext('f:segment_size', namespaces=NS))
    assert segment == 32 * 2 ** 20
    assert segment >= 8 * latent_transport.PAYLOAD_BYTES  # several latents in flight
    rtps = _default_participant(root).find('f:rtps', NS)
    used = [t.text for t in rtps.iterfind('f:userTransports/f:transport_id', NS)]
    assert shm[0].findtext('f:transport_id', namespaces=NS) in used
    assert rtps.findtext('f:useBuiltinTransports', namespaces=NS) == 'false'


def test_profile_keeps_every_transport_on_this_host():
    root = _profile()
    descriptors = _descriptors(root)
    for transport_id, desc in descriptors.items():
        kind = desc.findtext('f:type', namespaces=NS)
        assert kind in ('SHM', 'UDPv4'), f'{transport_id}: {kind} may leave the machine'
        if kind == 'UDPv4':
            allowed = [a.text for a in desc.iterfind('f:interfaceWhiteList/*', NS)]
            assert allowed and set(allowed) <= LOOPBACK, f'{transport_id}: {allowed}'
    rtps = _default_participant(root).find('f:rtps', NS)
    used = [t.text for t in rtps.iterfind('f:userTransports/f:transport_id', NS)]
    assert used and set(used) <= set(descriptors)
    # Discovery, peers and locators stay rmw's (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
    for tag in ('builtin', 'defaultUnicastLocatorList', 'defaultMulticastLocatorList',
                'default_external_unicast_locators', 'easy_mode_ip', 'builtinTransports'):
        assert rtps.find(f'f:{tag}', NS) is None, tag


def test_env_default_points_at_the_profile_and_a_user_setting_wins(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    dial_ros.apply_ros_env_defaults()
    assert os.environ[VAR] == dial_ros.fastdds_profile_path()
    assert os.path.basename(os.environ[VAR]) == PROFILE.name
    assert os.path.isfile(os.environ[VAR])
    monkeypatch.setenv(VAR, '/elsewhere/my_profile.xml')
    dial_ros.apply_ros_env_defaults()
    assert os.environ[VAR] == '/elsewhere/my_profile.xml'
    monkeypatch.setenv(VAR, '')  # the documented way to switch it off
    dial_ros.apply_ros_env_defaults()
    assert os.environ[VAR] == ''


@pytest.mark.ros
def test_latent_512kib_bit_exact_across_processes_with_the_profile():
    start = time.monotonic()
    run = latent_transport.run_pair('shm', duration=2.0, rate=10.0,
                                    domain_id=int(os.environ['ROS_DOMAIN_ID']),
                                    profile_file=str(PROFILE), match_timeout=10.0)
    assert time.monotonic() - start < 15.0
    assert run['payload_bytes'] == 64 * 2048 * 4
    assert run['returncodes'] == {'pub': 0, 'sub': 0}, run
    assert run['sent'] == 20
    assert run['received'] == run['sent'], run
    assert run['bit_exact'] and run['mismatches'] == 0 and run['duplicates'] == 0
    # The profile took effect: both processes mapped a 32 MiB segment, and Fast DDS logged no
    # XML parser error.
    for role, size in run['shm_segment_bytes_max_by_role'].items():
        assert size >= 32 * 2 ** 20, (role, run['shm_segments'])
    assert not run['problems'], run['problems']
    # The receiver keeps its freed 512 KiB buffers (dial_ros.alloc): without that it faulted
    # ~530 fresh pages in per message (four buffers' worth), the largest share of latency.
    assert run['minor_faults_per_msg']['sub'] < 128, run['minor_faults_per_msg']
    # the data went through shared memory: the receiver mapped the sender's segment (the
    # check test_remote_system2 inverts for the UDP profile)
    assert run['shm_segments_shared'] >= 1, run['shm_segments']
