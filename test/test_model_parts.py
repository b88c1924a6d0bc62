"""Split loading: each node's part holds only its weights and computes what the whole does."""
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from dial_ros.model.checkpoint import load_checkpoint
from dial_ros.model.default import load_model
from dial_ros.paths import bundled_checkpoint
from dial_ros.model.parts import PARTS
from dial_ros.model.policy import DialPolicy

ROOT = pathlib.Path(__file__).resolve().parent.parent
VIT = 'system2.adapter.hf.model.visual.'
IMAGE = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
TEXT = 'pick up the cube'


def count(module):
    return sum(p.numel() for p in module.parameters())


def outputs(policy):
    tokens = policy.encode_frame(IMAGE)
    intent = policy.foresee(tokens, TEXT)
    joints = np.linspace(-0.1, 0.1, policy.embodiment.num_joints)
    return tokens, intent, policy.act(tokens, intent, joints, seed=3)


@pytest.fixture(scope='module')
def whole():
    model, model_id = load_model()
    return model, model_id, outputs(DialPolicy(model))


def run_part(policy, reference):
    """The part's own call, compared bit for bit with the whole model's output."""
    tokens, intent, actions = reference
    joints = np.linspace(-0.1, 0.1, policy.embodiment.num_joints)
    got = {'vision': lambda: policy.encode_frame(IMAGE),
           'system2': lambda: policy.foresee(tokens, TEXT),
           'system1': lambda: policy.act(tokens, intent, joints, seed=3)}[policy.part]()
    want = {'vision': tokens, 'system2': intent, 'system1': actions}[policy.part]
    np.testing.assert_array_equal(got, want)


def test_each_part_holds_only_its_weights_and_matches_the_whole_model(whole):
    model, model_id, reference = whole
    expected = {'vision': count(model.system2.adapter.vision),
                'system2': count(model.system2) - count(model.system2.adapter.vision)
                - count(model.system2.adapter.hf.lm_head),
                'system1': count(model.system1)}
    for part in PARTS:
        got, got_id = load_model(part=part)
        keys = list(got.state_dict())
        assert got_id == model_id, part
        assert count(got) == expected[part], part
        if part == 'system1':  # the controller: no VLM, no ViT
            assert not [k for k in keys if k.startswith('system2.')]
            assert {k.split('.')[0] for k in keys} == {'system1', 'token_norm'}
        elif part == 'vision':  # perception: the ViT only
            assert all(k.startswith(VIT) for k in keys)
        else:
            assert not [k for k in keys if k.startswith(('system1.', VIT))]
        run_part(DialPolicy(got), reference)


def test_a_part_refuses_the_calls_of_another_part():
    policy = DialPolicy(load_model(part='system1')[0])
    with pytest.raises(ValueError, match='holds only the system1 part.*needs the vision part'):
        policy.encode_frame(IMAGE)
    with pytest.raises(ValueError, match='foresee needs the system2 part'):
        policy.foresee(np.zeros(policy.token_shape, np.float32), TEXT)


def test_untrained_default_parts_are_identical_to_the_whole():
    model, model_id = load_model('untrained', 'gr1_sim', seed=0)
    assert model_id.startswith('untrained-tiny@')
    reference = outputs(DialPolicy(model))
    for part in PARTS:
        got, got_id = load_model('untrained', 'gr1_sim', seed=0, part=part)
        assert got_id == model_id and got.part == part
        run_part(DialPolicy(got), reference)


def strip(tmp_path, name, keep):
    """A copy of the bundled checkpoint whose weights file holds only the keys ``keep`` takes."""
    folder = tmp_path / name
    shutil.copytree(bundled_checkpoint(), folder)
    with safe_open(str(bundled_checkpoint() / 'model.safetensors'), 'pt') as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if keep(k)}
    save_file(tensors, str(folder / 'model.safetensors'), metadata={'format': 'x'})
    return folder


def test_a_part_reads_nothing_but_its_own_tensors(tmp_path, whole):
    _, _, reference = whole
    folder = strip(tmp_path, 'system1_only', lambda k: k.startswith(('system1.', 'token_norm.')))
    policy = DialPolicy(load_checkpoint(folder, part='system1'))
    run_part(policy, reference)
    with pytest.raises(ValueError, match='does not match'):  # the whole model cannot load
        load_checkpoint(folder)
    folder = strip(tmp_path, 'vit_only', lambda k: k.startswith(VIT))
    run_part(DialPolicy(load_checkpoint(folder, part='vision')), reference)


def test_a_missing_part_names_what_is_missing(tmp_path):
    folder = strip(tmp_path, 'vit_only', lambda k: k.startswith(VIT))
    with pytest.raises(ValueError, match=r'the system1 part needs \d+ tensors that '
                       r'model.safetensors lacks, e.g. system1\.'):
        load_checkpoint(folder, part='system1')
    with pytest.raises(ValueError, match=r'system2 part needs \d+ .* e\.g\. system2\.'):
        load_checkpoint(folder, part='system2')
    with pytest.raises(ValueError, match="part: 'vlm' is not one of"):
        load_model(str(folder), part='vlm')
    (folder / 'model.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='model.safetensors is missing'):
        load_model(str(folder), part='vision')


def test_a_part_that_does_not_match_its_configuration_fails_clearly(tmp_path):
    folder = strip(tmp_path, 'ckpt', lambda k: True)
    path = folder / 'dial_config.yaml'
    meta = yaml.safe_load(path.read_text())
    meta['model']['system1']['dit_layers'] = 2  # the file has 4: tensors left over
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=r'system1 part\) does not match .* unexpected '
                       r'tensors .*system1\.blocks\.2'):
        load_checkpoint(folder, part='system1')
    meta['model']['system1'].update(dit_layers=4, dit_hidden=64)  # the file has 128 wide
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match='system1 part.* has shape'):
        load_checkpoint(folder, part='system1')


def test_tied_embeddings_load_from_the_name_safetensors_kept(tmp_path, whole):
    """Qwen2.5-VL-3B ties lm_head to the text embeddings; safetensors then saves only
    ``lm_head.weight``, which the System-2 part (no LM head) must still find."""
    _, _, reference = whole
    embed = 'system2.adapter.hf.model.language_model.embed_tokens.weight'
    head = 'system2.adapter.hf.lm_head.weight'
    folder = strip(tmp_path, 'tied', lambda k: k != head)
    with safe_open(str(folder / 'model.safetensors'), 'pt') as f:
        tensors = {(head if k == embed else k): f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(folder / 'model.safetensors'))
    config = json.loads((folder / 'vlm' / 'config.json').read_text())
    config['tie_word_embeddings'] = True
    (folder / 'vlm' / 'config.json').write_text(json.dumps(config))
    run_part(DialPolicy(load_checkpoint(folder, part='system2')), reference)


@pytest.mark.ros
def test_controller_process_runs_on_a_system1_only_checkpoint(tmp_path, whole):
    """A real controller process, given weights with no VLM or ViT tensor at all, computes
    the same chunk as the whole model in this process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from dial_ros.msg import ActionChunk, LatentTensor
    from dial_ros.nodes import common
    _, _, (tokens, intent, _) = whole
    folder = strip(tmp_path, 'system1_only', lambda k: k.startswith(('system1.', 'token_norm.')))
    model, model_id = load_model(str(folder), part='system1')
    policy = DialPolicy(model)
    spec = policy.embodiment
    pose = (spec.position_lower + spec.position_upper) / 2
    domain = random.Random(f'parts-{os.getpid()}').randint(100, 230)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(domain), OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'dial_ros.nodes.controller', '--ros-args',
           '-p', f'checkpoint:={folder}', '-p', f'embodiment:={spec.name}', '-p', 'seed:=0']
    log = tmp_path / 'controller.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('parts_test', context=context)
    chunks = []
    node.create_subscription(ActionChunk, common.TOPIC_CHUNK, chunks.append, 10)
    joints = node.create_publisher(JointState, common.TOPIC_JOINT_STATES, common.QOS_SENSOR)
    latents = {name: node.create_publisher(LatentTensor, topic, common.QOS_LATENT)
               for name, topic in (('obs', common.TOPIC_OBSERVATION),
                                   ('intent', common.TOPIC_INTENT))}

    def publish():  # the same tensors every time; the first chunk draws its noise from seed 0
        msg = JointState(name=list(spec.joint_names), position=pose.tolist())
        msg.header.stamp = node.get_clock().now().to_msg()
        joints.publish(msg)
        now = common.now_sec(node)
        for name, tensor in (('obs', tokens), ('intent', intent)):
            latents[name].publish(common.fill_latent(LatentTensor(), tensor, now, valid=True,
                                                     model_id=model_id, valid_for=2.0))
    node.create_timer(0.05, publish)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not chunks:
            assert proc.poll() is None, log.read_text()[-3000:]
            executor.spin_once(timeout_sec=0.1)
        assert chunks, 'no chunk within 60 s:\n' + log.read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    msg = chunks[0]
    assert msg.model_id == model_id
    got = np.asarray(msg.positions).reshape(msg.horizon, len(msg.joint_names))
    np.testing.assert_array_equal(got, policy.act(tokens, intent, pose, seed=0))
