"""Print the demo's table: dense vs pruned accuracy, density, exported file size, where the models went.

python scripts/demo_report.py demo_runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: Path) -> None:
    dense = json.loads((root / "dense" / "summary.json").read_text())
    pruned = json.loads((root / "pruned" / "summary.json").read_text())
    export = root / "export"
    rows = [
        ("dense (fine-tuned)", dense, root / "dense"),
        (f"{pruned['method']} (exported)", pruned, export),
    ]
    print()
    print(f"{'model':<28} {'accuracy':>9} {'encoder density':>16} {'safetensors':>12}  folder")
    for name, summary, folder in rows:
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
        density = summary["sparsity"]["density"]
        print(f"{name:<28} {summary['metrics']['accuracy']:>9.4f} {100 * density:>15.2f}% {size:>9.1f} MB  {folder}")
    print(
        f"\ntrained on {pruned['train_examples']} MNLI pairs, evaluated on {pruned['eval_examples']} held-out pairs; "
        "the export is a stock transformers folder (zeros where pruned; the file size is unchanged until the "
        "zeros are stored sparsely). Load it with AutoModelForSequenceClassification.from_pretrained."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_runs"))
