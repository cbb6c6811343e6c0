"""The worker and the API run on ONNX Runtime alone: building either imports neither torch nor transformers.

Each build runs in a fresh interpreter (this test process has torch loaded by other tests), against the real local
stack in its own namespace, with the model directory the setup populated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra.settings import Settings

pytestmark = pytest.mark.integration

TRAINING_STACK = ("torch", "transformers", "sentence_transformers", "music21", "matplotlib")

BUILD = {
    "worker": "from streams.app import create_app; create_app(s)",
    "serve": "from serving.api import create_apps; create_apps(s)",
}
# the API builds only with something to check credentials against: an HS256 secret (its JWT library is loaded too)
ENV = {"serve": {"THAW_SERVE__AUTH__JWT_SECRET": "a-signing-secret-for-the-torch-free-build"}}


@pytest.mark.parametrize("what", sorted(BUILD))
def test_build_loads_no_training_stack(what: str, stack_settings: Settings, unique_name: str) -> None:
    s = stack_settings.namespaced(unique_name)
    script = (
        "import json, sys\n"
        "from infra.settings import load_settings\n"
        "s = load_settings()\n"
        f"{BUILD[what]}\n"
        f"print(json.dumps([m for m in {TRAINING_STACK!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, **s.env(), **ENV.get(what, {})},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"building the {what} imported {loaded}"
