"""The committed stubs in sdk_python/_proto must be exactly what `make proto` generates from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = Path("sdk_python/_proto")


def _stub_files(root: Path) -> list[Path]:
    tree = (root / GENERATED / "durable").rglob("*")
    return sorted(p.relative_to(root) for p in tree if p.suffix in {".py", ".pyi"})


def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(REPO / "scripts/gen_proto.sh"), str(tmp_path)], check=True, env=env)
    fresh = _stub_files(tmp_path)
    committed = _stub_files(REPO)
    assert fresh == committed, "generated file set differs: run `make proto` and commit the result"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (REPO / p).read_bytes()]
    assert not stale, f"stubs out of date with proto/: {stale}; run `make proto` and commit the result"
