"""bench.repeat: runs a benchmark N times in sequence and keeps the median of each number."""
import json
import sys

from dial_ros.bench import repeat


def test_medians_over_the_numbers_every_run_has():
    runs = [{'p99_ms': 3.0, 'ok': True, 'runs': [{'hz': 10}], 'only_here': 1},
            {'p99_ms': 1.0, 'ok': False, 'runs': [{'hz': 30}]},
            {'p99_ms': 2.0, 'ok': True, 'runs': [{'hz': 20}], 'name': 'x'}]
    out = repeat.medians(runs)
    assert out['p99_ms'] == {'median': 2.0, 'runs': [3.0, 1.0, 2.0]}
    assert out['runs.0.hz']['median'] == 20
    assert 'only_here' not in out and 'ok' not in out and 'name' not in out


def test_runs_in_sequence_and_writes_a_summary(tmp_path, monkeypatch):
    # a stand-in benchmark module: writes the JSON it is asked for
    script = tmp_path / 'fake.py'
    script.write_text('import json, sys, time\n'
                      'path = sys.argv[sys.argv.index("--json") + 1]\n'
                      'json.dump({"t": time.time(), "x": float(sys.argv[-1])}, open(path, "w"))\n')
    calls = []
    real_call = repeat.subprocess.call

    def call(cmd, **kwargs):
        calls.append(cmd)
        # run the stand-in instead of a dial_ros.bench module, with the same arguments
        return real_call([sys.executable, str(script)] + cmd[3:], **kwargs)

    monkeypatch.setattr(repeat.subprocess, 'call', call)
    assert repeat.main(['--runs', '3', '--pause', '0', '--out', str(tmp_path / 'o'),
                        'e2e_latency', '--duration', '5']) == 0
    assert [c[2] for c in calls] == ['dial_ros.bench.e2e_latency'] * 3
    summary = json.loads((tmp_path / 'o' / 'summary.json').read_text())
    assert summary['runs'] == 3 and len(summary['load']) == 3
    assert summary['median']['x']['median'] == 5.0
    starts = summary['median']['t']['runs']
    assert starts == sorted(starts)  # one after the other
