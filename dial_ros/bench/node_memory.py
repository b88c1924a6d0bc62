"""Memory each model node holds: its part of the model against the whole.

    python -m dial_ros.bench.node_memory --json OUT.json [--checkpoint DIR]

Tiny scale: one fresh process per part loads it from the checkpoint (default: the bundled
one), as the node does, and reports its peak resident memory (ru_maxrss and VmHWM); a
process that only imports the same libraries gives the floor. Paper scale: the parameter
bytes each node would hold in bf16, counted on the meta device (no memory, no weights
needed) from the paper configuration (Qwen2.5-VL-3B System-2, 16-layer DiT System-1), and
the peak resident memory of a process that builds that part's skeleton: what a node pays
before it reads its tensors (a paper-scale node's peak is about that plus its part).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

NODES = {'vision': 'perception', 'system2': 'intent', 'system1': 'controller'}
GB = 1e9


def tensor_bytes(tensors, itemsize=None):
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * (itemsize or t.element_size())
    return total


def peak_mb():
    """(ru_maxrss, VmHWM) of this process in MB."""
    hwm = 0.0
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                hwm = int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, hwm


def child(mode, checkpoint):
    """Run in a fresh process: load ``mode`` ('imports', 'whole' or a part); print JSON.

    ``paper:<mode>``: build the paper-scale skeleton of ``mode`` on the meta device and
    prune it, i.e. everything the part loader does before it reads the part's tensors.
    """
    import torch
    torch.set_num_threads(1)
    from dial_ros.model.default import load_model  # the libraries a node imports
    from dial_ros.model.parts import prune
    start, out = time.perf_counter(), {'mode': mode}
    if mode.startswith('paper:'):
        model = paper_skeleton()
        if mode != 'paper:whole':
            prune(model, mode.split(':')[1])
        params = list(model.parameters())
        out.update(params=tensor_bytes(params, 1),
                   param_gb_bf16=round(tensor_bytes(params, 2) / GB, 3),
                   buffer_mb=round(tensor_bytes(model.buffers()) / 2**20, 3))
    elif mode != 'imports':
        model, out['model_id'] = load_model(checkpoint, part=None if mode == 'whole' else mode)
        params = list(model.parameters())
        out.update(params=sum(p.numel() for p in params), param_mb=tensor_bytes(params) / 2**20)
    out['load_s'] = round(time.perf_counter() - start, 2)
    out['ru_maxrss_mb'], out['vmhwm_mb'] = (round(v, 1) for v in peak_mb())
    print(json.dumps(out))


def in_children(modes, checkpoint=''):
    """Run ``child`` for each mode in a fresh process; their JSON lines."""
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for mode in modes:
        cmd = [sys.executable, '-m', 'dial_ros.bench.node_memory', '--child', mode,
               '--checkpoint', checkpoint]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]['mode'] = mode.split(':')[-1]
    return rows


def paper_skeleton():
    """The paper-scale DialModel with every parameter on the meta device."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from dial_ros.embodiment import load_embodiment
    from dial_ros.model.config import paper_config
    from dial_ros.model.dial import DialModel
    from dial_ros.model.parts import parameters_on_meta
    from dial_ros.model.system2 import Qwen25VLAdapter
    from dial_ros.model.tiny_vlm import (build_tiny_tokenizer, image_processor_for,
                                         qwen25_vl_3b_config)
    config = paper_config(embodiments=['gr1_sim'])
    tokenizer = build_tiny_tokenizer()  # a stand-in: the sizes come from the config
    with parameters_on_meta():
        hf = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(tokenizer))
        adapter = Qwen25VLAdapter(hf.to(torch.bfloat16), tokenizer, image_processor_for(224),
                                  224)
        return DialModel(config, [load_embodiment('gr1_sim')], adapter=adapter)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', help='write results here')
    parser.add_argument('--checkpoint', default='', help='checkpoint folder (default: the '
                        'bundled one, else the untrained tiny model)')
    parser.add_argument('--scale', choices=('tiny', 'paper', 'all'), default='all')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.checkpoint) or 0
    if not args.json:
        parser.error('--json is required')
    result = {}
    if args.scale in ('tiny', 'all'):
        result['tiny'] = in_children(('imports', 'whole', *NODES), args.checkpoint)
        print('tiny scale: mode | node | parameters | parameter MB | peak RSS (ru_maxrss) MB '
              '| VmHWM MB | load s')
        for r in result['tiny']:
            print(f"{r['mode']} | {NODES.get(r['mode'], '-')} | {r.get('params', 0)} | "
                  f"{r.get('param_mb', 0):.2f} | {r['ru_maxrss_mb']} | {r['vmhwm_mb']} | "
                  f"{r['load_s']}")
    if args.scale in ('paper', 'all'):
        result['paper'] = in_children(['paper:whole'] + [f'paper:{m}' for m in NODES])
        print('paper scale (bf16, meta device): mode | node | parameters | parameter GB | '
              'buffers MB | peak RSS of the meta skeleton MB')
        for r in result['paper']:
            print(f"{r['mode']} | {NODES.get(r['mode'], '-')} | {r['params']:,} | "
                  f"{r['param_gb_bf16']} | {r['buffer_mb']} | {r['ru_maxrss_mb']}")
        whole = result['paper'][0]['param_gb_bf16']
        split = sum(r['param_gb_bf16'] for r in result['paper'][1:])
        result['paper_summary'] = {'three_whole_copies_gb': round(3 * whole, 2),
                                   'three_parts_gb': round(split, 2)}
        print(f'three nodes: {3 * whole:.2f} GB as whole copies, {split:.2f} GB as parts')
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
