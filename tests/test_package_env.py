"""What importing `pie` sets before TensorFlow loads (pie/__init__.py)."""
import os
import subprocess
import sys

import pytest

# Prints TensorFlow's runtime oneDNN state after `import pie`, then the variable.
PROBE = ("import os, pie, tensorflow\n"
         "from tensorflow.python.util import _pywrap_util_port as port\n"
         "print(port.IsX86Available(), port.IsMklEnabled(), "
         "os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['TF_USE_LEGACY_KERAS'])\n")


def _probe(**env):
    base = {key: value for key, value in os.environ.items()
            if key not in ("TF_ENABLE_ONEDNN_OPTS", "TF_USE_LEGACY_KERAS")}
    result = subprocess.run([sys.executable, "-c", PROBE], env=dict(base, **env),
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_importing_pie_turns_onednn_on_for_every_x86_cpu():
    x86, onednn, variable, legacy = _probe()
    if x86 != "True":
        pytest.skip("oneDNN's switch is read on x86 CPUs only")
    assert (onednn, variable, legacy) == ("True", "1", "1")


def test_a_users_onednn_setting_wins():
    x86, onednn, variable, _ = _probe(TF_ENABLE_ONEDNN_OPTS="0")
    if x86 != "True":
        pytest.skip("oneDNN's switch is read on x86 CPUs only")
    assert (onednn, variable) == ("False", "0")
