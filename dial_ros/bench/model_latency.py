"""Model latency benchmark: parameters, System-2 intent and System-1 chunk latency, memory.

    python -m dial_ros.bench.model_latency --json OUT.json [--scale tiny|paper|all]

Tiny scale runs on one CPU thread. Paper scale runs where CUDA is available: with
``--vlm-path`` a local Qwen2.5-VL checkpoint, otherwise the published Qwen2.5-VL-3B
architecture with random weights (latency does not depend on weight values). Latencies are
medians over repeated runs after warm-up.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch


def measure(fn, repeats, warmup, sync):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def build(scale, vlm_path, device):
    from dial_ros.embodiment import load_embodiment
    from dial_ros.model.config import paper_config, tiny_config
    from dial_ros.model.dial import DialModel
    from dial_ros.model.system2 import Qwen25VLAdapter
    from dial_ros.model.tiny_vlm import (build_tiny_tokenizer, image_processor_for,
                                         qwen25_vl_3b_config)
    from transformers import Qwen2_5_VLForConditionalGeneration
    embodiment = load_embodiment('gr1_tabletop')
    if scale == 'tiny':
        return DialModel(tiny_config(embodiments=['gr1_tabletop']), [embodiment])
    config = paper_config(vlm_path, embodiments=['gr1_tabletop'])
    adapter = None
    if not vlm_path:
        tokenizer = build_tiny_tokenizer()
        with torch.device(device):
            hf = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(tokenizer))
        adapter = Qwen25VLAdapter(hf.to(torch.bfloat16).eval(), tokenizer,
                                  image_processor_for(224), 224)
    with torch.device(device):
        return DialModel(config, [embodiment], adapter=adapter).to(device).eval()


def run_scale(scale, vlm_path, repeats, warmup):
    device = 'cuda' if scale == 'paper' else 'cpu'
    if device == 'cpu':
        torch.set_num_threads(1)
        sync = (lambda: None)
        label = f'cpu ({platform.processor() or platform.machine()}, 1 thread)'
    else:
        torch.cuda.reset_peak_memory_stats()
        sync = torch.cuda.synchronize
        label = torch.cuda.get_device_name()
    model = build(scale, vlm_path, device)
    model.eval()
    dtype = model.system2.queries.dtype
    cfg = model.config
    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    tokens = model.system2.encode_images(image).to(device, dtype)
    state = torch.zeros(1, cfg.system1.max_state_dim, device=device, dtype=dtype)
    state_mask = torch.ones(1, cfg.system1.max_state_dim, device=device, dtype=torch.bool)
    emb = torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode():
        intent, _ = model.foresee(tokens, ['pick up the cube and lift it'])
        vit_ms, _ = measure(lambda: model.system2.encode_images(image), repeats, warmup, sync)
        s2_ms, s2_p90 = measure(lambda: model.foresee(tokens, ['pick up the cube and lift it']),
                                repeats, warmup, sync)
        s1_ms, s1_p90 = measure(lambda: model.sample_actions(intent, tokens, state, state_mask,
                                                             emb), repeats, warmup, sync)
    if device == 'cpu':
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    else:
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    return {
        'scale': scale, 'device': label,
        'params_system2': sum(p.numel() for p in model.system2.parameters()),
        'params_system1': sum(p.numel() for p in model.system1.parameters()),
        'system2_intent_ms': round(s2_ms, 3), 'system2_intent_p90_ms': round(s2_p90, 3),
        'system1_chunk_ms': round(s1_ms, 3), 'system1_chunk_p90_ms': round(s1_p90, 3),
        'system1_steps': cfg.system1.inference_steps, 'vit_encode_ms': round(vit_ms, 3),
        'peak_mem_mb': round(peak, 1), 'dtype': str(dtype).replace('torch.', ''),
        'image_px': cfg.vlm.image_size, 'repeats': repeats,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', required=True, help='write results here')
    parser.add_argument('--scale', choices=('tiny', 'paper', 'all'), default='all')
    parser.add_argument('--vlm-path', default='', help='local Qwen2.5-VL checkpoint folder')
    parser.add_argument('--repeats', type=int, default=100)
    parser.add_argument('--warmup', type=int, default=10)
    args = parser.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    scales = ['tiny', 'paper'] if args.scale == 'all' else [args.scale]
    results, skipped = [], []
    for scale in scales:
        if scale == 'paper' and not torch.cuda.is_available():
            skipped.append({'scale': 'paper', 'reason': 'no CUDA device on this machine'})
            continue
        results.append(run_scale(scale, args.vlm_path, args.repeats, args.warmup))
    cols = ['scale', 'device', 'params_system2', 'params_system1', 'system2_intent_ms',
            'system1_chunk_ms', 'vit_encode_ms', 'peak_mem_mb']
    print(' | '.join(cols))
    for r in results:
        print(' | '.join(str(r[c]) for c in cols))
    for s in skipped:
        print(f"{s['scale']}: skipped ({s['reason']})")
    with open(args.json, 'w') as f:
        json.dump({'results': results, 'skipped': skipped, 'torch': torch.__version__}, f,
                  indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
