"""Merge evaluation results into one Markdown table.

    python -m dial_ros.evaluate.table evals/dial_200 evals/groot_200 evals/expert > table.md
"""
import json
import pathlib
import sys

from dial_ros.evaluate.metrics import markdown_table


def main(argv=None):
    folders = sys.argv[1:] if argv is None else argv
    if not folders:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rows = []
    for folder in folders:
        path = pathlib.Path(folder)
        path = path / 'results.json' if path.is_dir() else path
        if not path.is_file():
            print(f'{path}: not found (run python -m dial_ros.evaluate first)', file=sys.stderr)
            return 2
        rows += json.loads(path.read_text())['splits']
    print(markdown_table(rows), end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
