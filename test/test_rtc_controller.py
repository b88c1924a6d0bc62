"""The controller with chunk_transition rtc as a real process: guided chunks, safe commands."""
import time

import numpy as np
import pytest

from test_node_controller import DOMAIN, check_safe, controller, moving

pytestmark = pytest.mark.ros


def test_rtc_controller_publishes_guided_chunks_and_tracks(tmp_path):
    from dial_ros import topics
    from dial_ros.msg import ActionChunk
    domain = 100 + (DOMAIN - 100 + 2) % 131  # apart from test_node_controller's processes
    with controller(tmp_path / 'controller.log', domain, chunk_transition='rtc',
                    rtc_max_guidance=5.0) as h:
        chunks = []
        h.node.create_subscription(ActionChunk, topics.TOPIC_CHUNK, chunks.append, 50)
        h.intents_on = True
        end = time.monotonic() + 60.0
        while time.monotonic() < end and not (len(chunks) >= 5 and h.diagnostics
                                              and int(h.diagnostics[2]['chunks_guided']) > 0):
            assert h.proc.poll() is None, h.log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert len(chunks) >= 5, h.log_path.read_text()[-3000:]
        values = h.diagnostics[2]
        # every chunk after the first is guided towards the one it replaces
        assert int(values['chunks_guided']) > 0, values
        assert 'dropped_chunk' not in values, values
        positions = np.frombuffer(chunks[-1].positions, np.float64)
        assert positions.shape == (chunks[-1].horizon * len(h.spec.joint_names),)
        _, cmds = h.record(1.0)
        assert moving(cmds)
        with h.lock:
            check_safe(h, np.stack([c for _, c in h.commands]))
        print(f"rtc controller: {values['chunks_guided']} of {values['chunks']} chunks guided, "
              f"inference p50 {values['chunk_inference_ms_p50']} ms")
