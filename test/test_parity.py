"""Train/deploy parity on a recorded episode: the ROS nodes compute what the model computes.

Parity means: given one recorded frame and the joint state recorded with it, the deployed
graph (perception -> intent -> controller, three real processes over DDS) publishes the same
action chunk that the trained model computes offline from the same dataset sample, within
float tolerance. Everything between the dataset and the model on the training side (image
decoding, state encoding, action normalisation, joint order, instruction) has a counterpart
in the node layer (Image message conversion, JointState mapping by name, de-normalisation,
ActionChunk layout); a difference in any of them makes a policy that trains well act badly,
and no amount of training fixes that.

The episode: one scripted-expert episode written by ``dial_ros.data.sim_demos.generate``
(in-process sim, lossless video, ~4 s), not the live recorder pipeline of
test_record_pipeline.py (launch + recorder + convert, minutes): what is checked here starts
at the dataset, and the frames the writer was given are captured so the decoded video can be
compared with them. The model: the bundled checkpoint ``checkpoints/dial_tiny_gr1``. It was
trained on an older dataset whose normalisation stats live in the checkpoint, so the offline
expectation uses the checkpoint's embodiment (what the nodes load), and the dataset's own
stats are only checked for a lossless round trip.

What each assertion protects:

* decoded frame == the frame the writer was given: training sees the camera's pixels (a
  lossy or colour-converting codec would train on other images than deployment sends);
* dataset ``state``/``state_mask`` == ``embodiment.encode_state(q)`` padded to the model's
  max_state_dim: training and ``DialPolicy.act`` encode the joint state the same way;
* joint names of info.json == the checkpoint's == the dataset spec's, and the embodiments
  are equal but for the normalisation: training labels and deployed commands index the same
  joints in the same order;
* action labels: ``joint_targets(denormalize(normalize(action_from_joints(a)))) == a`` on
  the sample's chunk: what the dataset normalises, the deploy side de-normalises and maps
  back to the recorded joints (catches a permutation between the action groups and
  ``joint_names``, or stats applied in the wrong order);
* ViT tokens of the training cache (batched, what training reads) == ``encode_frame`` of
  one frame (what perception runs);
* the deployed graph: /dial/observation_latent == offline tokens, /dial/latent_intent ==
  offline intent (same instruction; its instruction_id too), /dial/observation_joint_state
  maps by name to the recorded q, and each /dial/action_chunk == ``policy.act(tokens,
  intent, q, seed=controller seed + chunk index)``, in the embodiment's joint order, its
  header/observation/latent stamps EXACTLY the frame's stamp (consumers match chunks to
  frames by equality; a float round trip is ~120 ns off). The joint states streamed around
  the frame carry OTHER positions (the robot moved on), so the chunk only matches when the
  controller conditions on the joint state synchronised with the frame, as training pairs
  frame t with state t. They are kept QUIET_S away from the frame's stamp: perception pairs
  a frame with the first joint state within sync_slop_s, not the nearest (core/sync.py,
  for latency), while the dataset takes the nearest (data/align.py); that difference of up
  to sync_slop_s is by design and not what this test measures. The frame is sent a second
  time to check the seed bookkeeping (chunk k uses seed + k).
"""
import time

import numpy as np
import pytest

from dial_ros import codecs, topics
from rosgraph import ROOT, RosPeer, domain_id, start_node, stop_node

pytestmark = pytest.mark.ros

CHECKPOINT = ROOT / 'checkpoints' / 'dial_tiny_gr1'
EMBODIMENT = 'gr1_sim'
SEED = 4242          # the controller's chunk-noise seed: chunk k uses SEED + k
ATOL = 1e-5          # float32 model; identical inputs should give identical outputs
QUIET_S = 0.1        # no live joint state this close to a frame (perception's slop: 0.02 s)


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """One expert episode as a dataset, the frames the writer got, and the offline model."""
    from dial_ros.data import sim_demos
    from dial_ros.data.dataset import DialDataset
    from dial_ros.model.checkpoint import load_checkpoint
    from dial_ros.model.policy import DialPolicy

    written = []

    class CapturingWriter(sim_demos.LeRobotWriter):
        def add_episode(self, frames, images, instruction, tags):
            written.append(([np.array(image) for image in images], np.array(frames.state)))
            return super().add_episode(frames, images, instruction, tags)

    root = tmp_path_factory.mktemp('parity') / 'dataset'
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sim_demos, 'LeRobotWriter', CapturingWriter)
        summary = sim_demos.generate(root, 1, seed=0, max_episodes=3)
    assert summary['demos'] == 1, summary
    policy = DialPolicy(load_checkpoint(CHECKPOINT), EMBODIMENT)
    cfg = policy.model.config
    # built as the trainer builds it (train/trainer.py Trainer._dataset)
    ds = DialDataset(root, horizon=cfg.system1.horizon, future_offset=cfg.foresight_horizon,
                     image_size=cfg.vlm.image_size, max_state_dim=cfg.system1.max_state_dim,
                     max_action_dim=cfg.system1.max_action_dim)
    episode = ds.episodes[0]
    t = episode.length // 3
    row = episode.start + t
    sample = ds[row]  # one episode: sample index == row
    assert (sample['episode_index'], sample['frame_index']) == (0, t)
    image = ds.image(0, t)
    q = ds.state[row].astype(np.float64)  # what a JointState message carries
    tokens = policy.encode_frame(image)
    intent = policy.foresee(tokens, sample['instruction'])
    return dict(ds=ds, policy=policy, episode=episode, t=t, row=row, sample=sample,
                image=image, q=q, tokens=tokens, intent=intent, written=written[0],
                chunks={})


def offline_chunk(r, seed, q=None):
    """The chunk the trained model computes offline for the frame (cached per seed)."""
    if q is not None:
        return r['policy'].act(r['tokens'], r['intent'], q, seed=seed)
    if seed not in r['chunks']:
        r['chunks'][seed] = r['policy'].act(r['tokens'], r['intent'], r['q'], seed=seed)
    return r['chunks'][seed]


def test_decoded_frame_is_the_recorded_frame(recorded):
    r = recorded
    images, states = r['written']
    assert r['image'].dtype == np.uint8 and r['image'].shape == (224, 224, 3)
    np.testing.assert_array_equal(r['image'], images[r['t']])
    np.testing.assert_array_equal(r['sample']['image'], images[r['t']])
    # the state column is float32: the sim's float64 reading rounded once, nothing else
    np.testing.assert_allclose(r['q'], states[r['t']], rtol=0, atol=1e-6)


def test_state_encoding_is_the_deployed_one(recorded):
    r = recorded
    spec, cfg = r['policy'].embodiment, r['policy'].model.config.system1
    state, mask = spec.encode_state(r['q'])
    padded = np.zeros(cfg.max_state_dim, np.float32)
    padded_mask = np.zeros(cfg.max_state_dim, bool)
    padded[:state.size], padded_mask[:mask.size] = state, mask
    assert r['sample']['state'].shape == padded.shape
    np.testing.assert_array_equal(r['sample']['state_mask'], padded_mask)
    # training encodes the float32 column, the controller the float64 message: <= 1 ulp
    np.testing.assert_allclose(r['sample']['state'], padded, rtol=0, atol=1e-6)


def test_joint_order_and_embodiment_are_the_trained_ones(recorded):
    r = recorded
    ds, policy = r['ds'], r['policy']
    names = ds.info['features']['observation.state']['names']
    assert list(names) == policy.joint_names == list(ds.spec.joint_names)
    assert ds.info['features']['action']['names'] == names
    trained, data = policy.embodiment.to_dict(), ds.spec.to_dict()
    trained.pop('normalization'), data.pop('normalization')
    assert trained == data


def test_action_labels_round_trip_to_the_recorded_joints(recorded):
    r = recorded
    ds, policy, sample = r['ds'], r['policy'], r['sample']
    for spec in (ds.spec, policy.embodiment):
        rows = r['episode'].start + np.minimum(r['t'] + np.arange(policy.horizon),
                                               r['episode'].length - 1)
        recorded_targets = ds.action[rows].astype(np.float64)
        action, dims = spec.action_from_joints(recorded_targets)
        assert dims.all()  # gr1_sim: every action dim is a joint
        back = spec.joint_targets(spec.denormalize_action(spec.normalize_action(action)))
        np.testing.assert_allclose(back, recorded_targets, rtol=0, atol=1e-9)
    # the sample's labels (dataset stats) de-normalise to the recorded targets
    labels = sample['actions'][:, :ds.spec.action_dim].astype(np.float64)
    assert sample['action_mask'][:, :ds.spec.action_dim].all()
    back = ds.spec.joint_targets(ds.spec.denormalize_action(labels))
    np.testing.assert_allclose(back, recorded_targets, rtol=0, atol=1e-5)


def test_training_tokens_are_the_deployed_tokens(recorded):
    from dial_ros.data.token_cache import load_token_cache
    r = recorded
    cache = load_token_cache(r['ds'], r['policy'].model)
    np.testing.assert_allclose(cache[0][r['t']], r['tokens'], rtol=0, atol=ATOL)


# --- the deployed graph --------------------------------------------------------------------
class Graph:
    """The test's side of the graph: the robot (camera + joints) and the recorders."""

    def __init__(self, peer, names, q, q_live):
        from sensor_msgs.msg import Image, JointState

        from dial_ros.msg import ActionChunk, LatentTensor
        from dial_ros.nodes.qos import QOS_LATENT, QOS_SENSOR
        self.peer, self.JointState, self.Image, self.qos = peer, JointState, Image, QOS_LATENT
        node = peer.node
        # the robot reports its joints in its own order, with one the embodiment lacks
        order = list(reversed(range(len(names))))
        self.names = [names[i] for i in order] + ['joint_not_in_the_embodiment']
        self.q_frame = [float(q[i]) for i in order] + [0.3]
        self.q_live = [float(q_live[i]) for i in order] + [0.3]
        self.image_pub = node.create_publisher(Image, topics.TOPIC_IMAGE, QOS_SENSOR)
        self.joint_pub = node.create_publisher(JointState, topics.TOPIC_JOINT_STATES,
                                               QOS_SENSOR)
        self.got = {}
        self.subs = [self._collect(ActionChunk, topics.TOPIC_CHUNK),
                     self._collect(LatentTensor, topics.TOPIC_OBSERVATION),
                     self._collect(LatentTensor, topics.TOPIC_INTENT),
                     self._collect(JointState, topics.TOPIC_OBSERVATION_JOINT_STATE)]
        self.last_joint_stamp = None

    def _collect(self, msg_type, topic):
        self.got[topic] = []
        return self.peer.node.create_subscription(msg_type, topic, self.got[topic].append,
                                                  self.qos)

    def now(self):
        return self.peer.node.get_clock().now().to_msg()

    def publish_joints(self, positions=None, stamp=None):
        msg = self.JointState(name=self.names, position=positions or self.q_live)
        msg.header.stamp = stamp or self.now()
        self.joint_pub.publish(msg)

    def publish_frame(self, image):
        """The recorded frame and the joint state recorded with it, under one stamp.

        No live joint state is stamped within QUIET_S of the frame: perception pairs a
        frame with the FIRST joint state it finds within sync_slop_s when the frame arrives
        (by design, for latency: core/sync.py), not the nearest one, so a live state a few
        ms older could take the recorded one's place.
        """
        self.peer.run(QUIET_S)
        stamp = self.now()
        self.publish_joints(self.q_frame, stamp)
        msg = codecs.fill_image(self.Image(), image, 0.0, 'head_camera')
        msg.header.stamp = stamp
        self.image_pub.publish(msg)
        self.peer.run(QUIET_S)
        return key(msg)

    def run(self, seconds, until=lambda: False):
        """Spin, streaming the live joint state at 50 Hz, until ``until()`` or ``seconds``."""
        end = time.monotonic() + seconds
        while not until() and time.monotonic() < end:
            self.peer.run(0.1, 50.0, self.publish_joints)
        return until()

    def connected(self):
        node = self.peer.node
        return (self.image_pub.get_subscription_count() >= 1            # perception
                and self.joint_pub.get_subscription_count() >= 2        # + controller
                and all(s.get_publisher_count() >= 1 for s in self.subs)
                and node.count_subscribers(topics.TOPIC_OBSERVATION) >= 3   # intent, controller
                and node.count_subscribers(topics.TOPIC_INTENT) >= 2
                and node.count_subscribers(topics.TOPIC_OBSERVATION_JOINT_STATE) >= 2)


def stamp_key(stamp):
    return (stamp.sec, stamp.nanosec)


def key(msg):
    return stamp_key(msg.header.stamp)


def near(a, b, ns=1000):
    """Stamps (sec, nanosec) within ``ns`` nanoseconds."""
    return abs((a[0] - b[0]) * 10**9 + a[1] - b[1]) <= ns


def logs(paths):
    return '\n'.join(f'--- {p.name}\n{p.read_text()[-2500:]}' for p in paths)


def test_deployed_nodes_compute_the_offline_chunk(recorded, tmp_path):
    from dial_ros.nodes import common
    r = recorded
    policy, q = r['policy'], r['q']
    instruction = r['sample']['instruction']
    # the joints streamed around the frame have moved on: only the synchronised one is q
    q_live = q + 0.05
    assert np.abs(offline_chunk(r, SEED, q_live) - offline_chunk(r, SEED)).max() > 1e-3
    assert np.abs(offline_chunk(r, SEED + 1) - offline_chunk(r, SEED)).max() > 1e-3

    domain = domain_id('parity')
    model = dict(checkpoint=str(CHECKPOINT), embodiment=EMBODIMENT)
    # timeouts are wide (a loaded 2-core machine): they decide WHEN, never WHAT is computed
    nodes = {
        'perception': dict(model, max_frame_age_s=30.0, expected_camera_hz=1.0),
        'intent': dict(model, instruction=instruction, intent_rate_hz=10.0,
                       valid_for_s=30.0, max_observation_age_s=30.0),
        'controller': dict(model, seed=SEED, dry_run='true', chunk_rate_hz=10.0,
                           chunk_dt_s=1.0, intent_timeout_s=30.0, observation_timeout_s=30.0,
                           joint_state_timeout_s=5.0, control_rate_hz=50,
                           realtime_priority=0, process_priority=0),
    }
    paths = [tmp_path / f'{name}.log' for name in nodes]
    procs, peer = [], None
    try:
        for (name, params), path in zip(nodes.items(), paths):
            procs.append(start_node(name, domain, path, **params))
        peer = RosPeer(domain)
        g = Graph(peer, policy.joint_names, q, q_live)

        def alive():
            dead = [p.args[2] for p in procs if p.poll() is not None]
            assert not dead, f'{dead} exited\n{logs(paths)}'
            return True

        assert g.run(90.0, lambda: alive() and g.connected()), \
            f'the graph never connected\n{logs(paths)}'
        g.run(1.0)  # the nodes' own matches (perception -> intent/controller, ...)

        chunks = g.got[topics.TOPIC_CHUNK]
        sent = [g.publish_frame(r['image'])]
        # one frame; best effort may lose it while the graph settles: then once more
        while not g.run(30.0, lambda: alive() and chunks) and len(sent) < 3:
            sent.append(g.publish_frame(r['image']))
        assert chunks, f'no action chunk for {len(sent)} frames\n{logs(paths)}'
        # the same frame again: a new observation, the next seed (computed as it arrives,
        # with the intent of an earlier frame: the same image, so the same intent)
        sent.append(g.publish_frame(r['image']))
        assert g.run(30.0, lambda: alive() and any(near(key(c), sent[-1]) for c in chunks)), \
            f'no chunk for the second frame\n{logs(paths)}'
    finally:
        if peer is not None:
            peer.close()
        for proc in procs:
            stop_node(proc)

    # perception: the ViT tokens of the frame, stamped with it
    latents = g.got[topics.TOPIC_OBSERVATION]
    assert latents and {key(m) for m in latents} <= set(sent)
    for msg in latents:
        np.testing.assert_allclose(codecs.read_latent(msg, policy.token_shape), r['tokens'],
                                   rtol=0, atol=ATOL)
    # the joint state synchronised with the frame (by name: the robot's order differs)
    for msg in g.got[topics.TOPIC_OBSERVATION_JOINT_STATE]:
        assert key(msg) in set(sent)
        np.testing.assert_array_equal(common.JointOrder(policy.joint_names).positions(msg), q)
    # intent: System-2 on those tokens and the dataset's instruction
    intents = g.got[topics.TOPIC_INTENT]
    assert intents
    for msg in intents:
        assert key(msg) in set(sent)
        assert msg.instruction_id == codecs.instruction_id(instruction)
        np.testing.assert_allclose(codecs.read_latent(msg, policy.token_shape), r['intent'],
                                   rtol=0, atol=ATOL)
    # controller: chunk k == the offline chunk with seed SEED + k, in joint_names order
    for k, msg in enumerate(chunks):
        assert list(msg.joint_names) == policy.joint_names
        assert msg.horizon == policy.horizon and msg.model_id == latents[0].model_id
        online = np.asarray(msg.positions).reshape(msg.horizon, len(msg.joint_names))
        expected = offline_chunk(r, SEED + k)
        print(f'chunk {k}: max |online - offline| = {np.abs(online - expected).max():.3g}')
        np.testing.assert_allclose(online, expected, rtol=0, atol=ATOL,
                                   err_msg=f'chunk {k} (seed {SEED + k})')
    # ... stamped with the frame's exact stamp (what a consumer matches chunks to frames by)
    for k, msg in enumerate(chunks):
        stamps = [key(msg), stamp_key(msg.observation_stamp), stamp_key(msg.latent_stamp)]
        assert all(s in set(sent) for s in stamps), (k, stamps, sent)
