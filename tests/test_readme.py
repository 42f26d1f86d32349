"""The README's example runs as written, and its two commands are the ones CI and users run."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_bench_command_runs_the_kmeans_default():
    cmds = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert any(c.strip().endswith('pip install -e ".[bench]" && pyml bench kmeans') for c in cmds)
