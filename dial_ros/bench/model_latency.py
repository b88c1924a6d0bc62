"""Model latency benchmark: the three model calls of the ROS graph, as the nodes make them.

    python -m dial_ros.bench.model_latency --json OUT.json [--checkpoint DIR]
        [--scale checkpoint|tiny|paper|all]

``checkpoint`` (the default) measures the deployed model: the bundled checkpoint, or the one
``--checkpoint`` names, each part loaded as its node loads it. ``tiny`` builds the in-code
tiny config (untrained); ``paper`` runs where CUDA is available: with ``--vlm-path`` a local
Qwen2.5-VL checkpoint, otherwise the published Qwen2.5-VL-3B architecture with random weights
(latency does not depend on weight values). On the CPU one thread.

Timed calls: ViT encode = ``DialPolicy.encode_frame`` (perception), System-2 intent =
``DialPolicy.foresee`` (intent node), System-1 chunk = ``DialPolicy.act`` (the controller's
whole call: input checks, state encoding, seeded noise, K flow steps, denormalisation).
Median and p99 over ``--repeats`` after ``--warmup``, back to back; then ViT and System-1
again at ``--pace-hz`` (20: one call per camera frame, the core idle in between, as in the
launch), which costs more here (cold caches, an idle core waking). The load average goes into
the JSON.
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

INSTRUCTION = 'pick up the cube and lift it'


def measure(fn, repeats, warmup, sync, gap_s=0.0):
    """Median and p99 of ``fn``'s wall time in ms; ``gap_s`` of idle before each call."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        sync()
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        fn(i)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), float(np.percentile(times, 99))


def build_model(scale, vlm_path, device):
    """The in-code tiny or paper-scale model with the gr1_tabletop embodiment."""
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


def policies(scale, checkpoint, vlm_path, device):
    """(perception, intent, controller) policies, with the part each node holds."""
    from dial_ros.model.policy import DialPolicy
    if scale == 'checkpoint':
        from dial_ros import paths
        path = checkpoint or paths.bundled_checkpoint()
        return tuple(DialPolicy.from_checkpoint(path, device=device, part=part)
                     for part in ('vision', 'system2', 'system1'))
    policy = DialPolicy(build_model(scale, vlm_path, device), device=device)
    return policy, policy, policy


def run_scale(scale, checkpoint, vlm_path, repeats, warmup, pace_hz=20.0):
    device = 'cuda' if scale == 'paper' else 'cpu'
    if device == 'cpu':
        torch.set_num_threads(1)
        sync = (lambda: None)
        label = f'cpu ({platform.processor() or platform.machine()}, 1 thread)'
    else:
        torch.cuda.reset_peak_memory_stats()
        sync = torch.cuda.synchronize
        label = torch.cuda.get_device_name()
    load_before = os.getloadavg()
    vision, intent_node, controller = policies(scale, checkpoint, vlm_path, device)
    image = np.random.default_rng(0).integers(0, 256, (vision.image_size,) * 2 + (3,),
                                              dtype=np.uint8)
    tokens = vision.encode_frame(image)
    intent = intent_node.foresee(tokens, INSTRUCTION)
    joints = np.zeros(controller.embodiment.num_joints)
    vit = measure(lambda i: vision.encode_frame(image), repeats, warmup, sync)
    s2 = measure(lambda i: intent_node.foresee(tokens, INSTRUCTION), repeats, warmup, sync)
    s1 = measure(lambda i: controller.act(tokens, intent, joints, seed=i), repeats, warmup,
                 sync)
    # as the nodes call them: one call per frame (20 Hz), the core idle in between, so
    # caches and the CPU's idle state cost what they cost in the launch
    paced = {}
    if device == 'cpu' and pace_hz > 0:
        n = max(20, repeats // 3)
        gap = 1.0 / pace_hz
        paced = {'paced_hz': pace_hz, 'paced_repeats': n}
        for name, fn in (('vit_encode', lambda i: vision.encode_frame(image)),
                         ('system1_chunk', lambda i: controller.act(tokens, intent, joints,
                                                                    seed=i))):
            median, p99 = measure(fn, n, 3, sync, gap)
            paced.update({f'{name}_paced_ms': round(median, 3),
                          f'{name}_paced_p99_ms': round(p99, 3)})
    if device == 'cpu':
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    else:
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    cfg = controller.model.config
    return {
        'scale': scale, 'device': label,
        'checkpoint': str(checkpoint or 'bundled') if scale == 'checkpoint' else None,
        'params_system2': sum(p.numel() for p in intent_node.model.system2.parameters()),
        'params_system1': sum(p.numel() for p in controller.model.system1.parameters()),
        'system2_intent_ms': round(s2[0], 3), 'system2_intent_p99_ms': round(s2[1], 3),
        'system1_chunk_ms': round(s1[0], 3), 'system1_chunk_p99_ms': round(s1[1], 3),
        'vit_encode_ms': round(vit[0], 3), 'vit_encode_p99_ms': round(vit[1], 3),
        'system1_steps': cfg.system1.inference_steps, 'embodiment': controller.embodiment.name,
        'peak_mem_mb': round(peak, 1), 'dtype': str(controller.dtype).replace('torch.', ''),
        'image_px': cfg.vlm.image_size, 'repeats': repeats,
        'loadavg_before': [round(x, 2) for x in load_before],
        'loadavg_after': [round(x, 2) for x in os.getloadavg()],
        **paced,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', required=True, help='write results here')
    parser.add_argument('--scale', choices=('checkpoint', 'tiny', 'paper', 'all'),
                        default='checkpoint', help='checkpoint: the deployed model (default)')
    parser.add_argument('--checkpoint', default='',
                        help='checkpoint folder for --scale checkpoint (default: the bundled one)')
    parser.add_argument('--vlm-path', default='', help='local Qwen2.5-VL checkpoint folder')
    parser.add_argument('--repeats', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--pace-hz', type=float, default=20.0,
                        help='also time ViT and System-1 called at this rate, idle between '
                        '(as the nodes run; 0: skip)')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    scales = ['checkpoint', 'tiny', 'paper'] if args.scale == 'all' else [args.scale]
    results, skipped = [], []
    for scale in scales:
        if scale == 'paper' and not torch.cuda.is_available():
            skipped.append({'scale': 'paper', 'reason': 'no CUDA device on this machine'})
            continue
        results.append(run_scale(scale, args.checkpoint, args.vlm_path, args.repeats,
                                 args.warmup, args.pace_hz))
    cols = ['scale', 'device', 'system2_intent_ms', 'system2_intent_p99_ms', 'system1_chunk_ms',
            'system1_chunk_p99_ms', 'vit_encode_ms', 'vit_encode_p99_ms', 'peak_mem_mb']
    print(' | '.join(cols))
    for r in results:
        print(' | '.join(str(r[c]) for c in cols))
    for r in results:
        if 'system1_chunk_paced_ms' in r:
            print(f"paced at {r['paced_hz']} Hz: system1_chunk {r['system1_chunk_paced_ms']} "
                  f"(p99 {r['system1_chunk_paced_p99_ms']}), vit_encode "
                  f"{r['vit_encode_paced_ms']} (p99 {r['vit_encode_paced_p99_ms']}) ms")
    for s in skipped:
        print(f"{s['scale']}: skipped ({s['reason']})")
    with open(args.json, 'w') as f:
        json.dump({'results': results, 'skipped': skipped, 'torch': torch.__version__}, f,
                  indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
