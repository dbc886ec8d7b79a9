"""Every process of ``conescope dev`` that loads the code location (the code server, the run
launcher's forkserver, a run launched through the code server when the forkserver cannot serve)
loads it before anything else: loading it must not import open_clip (about 3 s: torch, torchvision,
transformers), which only the embedding steps need (the forkserver imports it on purpose, once).
The profile's architecture names are checked against open_clip's config files
instead, with the same result as ``open_clip.list_models()``."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_known_architectures_are_open_clips_own_list():
    import open_clip

    from conescope.model_kinds.open_clip import _register_configs, known_architectures

    _register_configs()
    assert known_architectures() == set(open_clip.list_models())
    assert {"ViT-B-32", "RN101", "conescope-tiny"} <= known_architectures()


def test_known_pretrained_tags_are_open_clips_own_list():
    import open_clip

    from conescope.model_kinds.open_clip import known_pretrained

    expected: dict[str, set[str]] = {}
    for arch, tag in open_clip.list_pretrained():
        expected.setdefault(arch, set()).add(tag)
    assert known_pretrained() == expected
    assert {"openai", "laion2b_s34b_b79k"} <= known_pretrained()["ViT-B-32"]


def test_loading_the_code_location_does_not_import_open_clip():
    code = ("import sys, pipelines.definitions; "
            "print(sorted(m for m in ('open_clip', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
