"""Run one documentation page's code samples in order, like a reader would (used by tests/test_docs.py).

    python tests/docs_runner.py SAMPLES.json

SAMPLES.json is a list of {"where": "page.md:LINE", "lang": "python"|"bash", "code": str}. The process starts in
the page's sandbox directory. Python samples run with exec() in one module shared by the page (a later sample
may use a name an earlier one defined). A bash sample is already reduced to the lines that should run; it runs
under `bash -e -o pipefail`, and its working directory and exported variables carry over to the next sample.
On the first failure the process prints where and exits 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import types


def run_bash(code: str, where: str) -> None:
    """Run bash lines; keep the directory and environment they leave behind for the samples after them."""
    with tempfile.TemporaryDirectory(prefix="docs-bash-") as tmp:
        state = os.path.join(tmp, "state")
        script = (
            "set -eo pipefail\n"
            f"trap 'echo \"docs-test: {where}: failed at sample line $((LINENO - 2)): $BASH_COMMAND\" >&2' ERR\n"
            f"{code}\n"
            f'pwd > "{state}.pwd"; env -0 > "{state}.env"\n'
        )
        done = subprocess.run(["bash", "-c", script], timeout=600)
        if done.returncode:
            raise SystemExit(f"docs-test: {where}: bash exited {done.returncode}")
        with open(f"{state}.pwd") as f:
            os.chdir(f.read().strip())
        with open(f"{state}.env", "rb") as f:
            env = dict(item.split("=", 1) for item in f.read().decode().split("\0") if "=" in item)
        for name in list(os.environ):
            if name not in env:
                del os.environ[name]
        os.environ.update(env)


def main(path: str) -> int:
    with open(path) as f:
        samples = json.load(f)
    # the page's Python samples share one real module, so tools that look a function's module up (flytekit's
    # @workflow, pickle) find it
    module = types.ModuleType("docs_sample")
    module.__file__ = os.path.abspath("docs_sample.py")
    sys.modules[module.__name__] = module
    samples_dir = tempfile.mkdtemp(prefix="docs-samples-")
    for sample in samples:
        where, lang, code = sample["where"], sample["lang"], sample["code"]
        print(f"docs-test: running {where} ({lang})", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            if lang == "python":
                # a real file, so inspect.getsource (flytekit's @workflow) and tracebacks can show the sample
                source = os.path.join(samples_dir, re.sub(r"[^\w.-]", "_", where) + ".py")
                with open(source, "w") as f:
                    f.write(code)
                exec(compile(code, source, "exec"), module.__dict__)  # noqa: S102 - the samples are the repository's docs
            else:
                run_bash(code, where)
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            return 1
        except BaseException:  # noqa: BLE001 - report any failure of a sample with its place
            traceback.print_exc()
            print(f"docs-test: {where} failed", file=sys.stderr)
            return 1
        sys.stdout.flush()
        print(f"docs-test: {where} ok in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
