#!/usr/bin/env bash
# A side environment, .venv-deepspeed, for the DeepSpeed ZeRO-3 test (tests/training/test_deepspeed_zero3.py):
# .venv's packages (torch, transformers, ptuning itself) seen through a .pth file, plus DeepSpeed.
# Why apart from .venv: once deepspeed is installed, accelerate imports it in every process, and its import
# prints "Setting accelerator to CPU" on stdout, which `ptuning predict` uses for predictions.
# deepspeed 0.19.8 is a source archive on PyPI: DS_BUILD_OPS=0 builds no op at install (on CPU it compiles one
# communication op with the system C++ compiler and ninja the first time a process group starts).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-deepspeed
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
main_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
side_site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir, not a bare path: .venv's own .pth files (the editable ptuning install) must be read too
echo "import site; site.addsitedir('$main_site')" >"$side_site/ptuning-main-venv.pth"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" wheel==0.48.0 hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 py-cpuinfo==9.0.0 einops==0.8.2
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation --no-deps deepspeed==0.19.8
