"""lab/bin/uv-bootstrap: one hash-checked uv per machine, safe when CI's jobs start at once."""

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "lab" / "bin" / "uv-bootstrap"

# Stands in for python3: `-m venv DIR` makes a DIR whose pip "installs" uv after a pause
# (long enough for concurrent callers to overlap) and records its arguments.
FAKE_PYTHON = """#!/usr/bin/env bash
set -e
[ "$1 $2" = "-m venv" ] || exit 9
mkdir -p "$3/bin"
cat > "$3/bin/pip" <<PIP
#!/usr/bin/env bash
sleep 0.3
echo "\\$*" >> "$LOG"
printf '#!/bin/sh\\necho uv 0.13.9\\n' > "$3/bin/uv"
chmod +x "$3/bin/uv"
PIP
chmod +x "$3/bin/pip"
"""


def bootstrap(tmp_path):
    env = dict(os.environ, PYTHON=str(tmp_path / "python3"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["LOG"] = str(tmp_path / "pip.log")
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def test_concurrent_callers_share_one_uv_and_leave_no_partial_directory(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    with ThreadPoolExecutor(5) as pool:
        runs = list(pool.map(lambda _: bootstrap(tmp_path), range(5)))
    assert [run.returncode for run in runs] == [0] * 5, [run.stderr for run in runs]
    paths = {run.stdout.strip() for run in runs}
    assert len(paths) == 1
    uv = Path(paths.pop())
    assert subprocess.run([str(uv)], capture_output=True, text=True, check=True).stdout == "uv 0.13.9\n"
    # Only the winner's directory is left in the cache, keyed by the requirements file.
    assert [p.name for p in (tmp_path / "cache" / "montaiguillon").iterdir()] == [uv.parents[1].name]
    assert [p.name for p in uv.parents[1].iterdir()] == ["bin"]  # no loser's directory moved inside it
    # Every install checked hashes against the pinned file.
    for line in (tmp_path / "pip.log").read_text().splitlines():
        assert "--require-hashes" in line and str(ROOT / "requirements-bootstrap.txt") in line
    # Once it exists, nothing is installed again.
    installs = len((tmp_path / "pip.log").read_text().splitlines())
    assert bootstrap(tmp_path).stdout.strip() == str(uv)
    assert len((tmp_path / "pip.log").read_text().splitlines()) == installs


def test_a_failed_install_leaves_nothing_and_says_so(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(
        '#!/usr/bin/env bash\nmkdir -p "$3/bin"\nprintf \'#!/bin/sh\\nexit 1\\n\' > "$3/bin/pip"\n'
        'chmod +x "$3/bin/pip"\n'
    )
    fake.chmod(0o755)
    run = bootstrap(tmp_path)
    assert run.returncode != 0 and run.stdout == ""
    assert "could not install uv from" in run.stderr and "requirements-bootstrap.txt" in run.stderr
    assert list((tmp_path / "cache" / "montaiguillon").iterdir()) == []
