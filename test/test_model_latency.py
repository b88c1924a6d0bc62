"""The model latency benchmark measures the deployed checkpoint, as the nodes call it."""
import json

from dial_ros.bench import model_latency


def test_benchmark_measures_the_bundled_checkpoint_by_default(tmp_path):
    out = tmp_path / 'lat.json'
    assert model_latency.main(['--json', str(out), '--repeats', '5', '--warmup', '1']) == 0
    data = json.loads(out.read_text())
    assert data['skipped'] == []
    (result,) = data['results']
    assert result['scale'] == 'checkpoint' and result['checkpoint'] == 'bundled'
    assert result['embodiment'] == 'gr1_sim' and result['system1_steps'] == 4
    assert result['params_system1'] > 2e6  # the checkpoint's System-1, not the tiny config's
    for name in ('system1_chunk', 'system2_intent', 'vit_encode'):
        assert 0 < result[f'{name}_ms'] <= result[f'{name}_p99_ms']
