"""Paper scale on a GPU (skipped where CUDA is missing, as in CI)."""
import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_paper_scale_latency_benchmark_runs(tmp_path):
    from dial_ros.bench import model_latency
    out = tmp_path / 'lat.json'
    model_latency.main(['--json', str(out), '--scale', 'paper', '--repeats', '5'])
    import json
    result = json.loads(out.read_text())['results'][0]
    assert result['params_system2'] > 3e9
    assert result['system1_chunk_ms'] > 0
