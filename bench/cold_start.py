"""Cold start of each function: a fresh Python process imports the handler module and builds
what it builds at init (services, clients), as Lambda's init phase does. The baseline is a
fresh process that only runs `import boto3`, measured in the same run, interleaved."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import importlib.util, json, sys, time
started = time.perf_counter()
target = sys.argv[1]
if target == "boto3":
    import boto3
else:
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(json.dumps({"ms": (time.perf_counter() - started) * 1000}))
"""


def _measure(target: str, env: dict[str, str]) -> float:
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, target], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1])["ms"])


def run(repeats: int = 7) -> list[tuple[str, float, float]]:
    with LocalStack(run_schedules=False) as stack:
        functions = {
            logical_id: (runtime.code_dir / f"{runtime.handler.rpartition('.')[0]}.py", runtime.environment)
            for logical_id, runtime in stack.functions.items()
        }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "PYTHONPATH": str(ROOT / "shared"),
            "PYTHONDONTWRITEBYTECODE": "",
        }
    )
    samples: dict[str, list[float]] = {name: [] for name in ["boto3", *functions]}
    for _ in range(repeats):  # interleaved, so drift on the machine hits every figure alike
        samples["boto3"].append(_measure("boto3", base_env))
        for name, (path, env) in functions.items():
            samples[name].append(
                _measure(str(path), {**base_env, **env, "POWERTOOLS_TRACE_DISABLED": "false"})
            )
    baseline = statistics.median(samples["boto3"])
    return [
        (name, statistics.median(values), statistics.median(values) / baseline)
        for name, values in samples.items()
    ]


def main() -> None:
    rows = run()
    print("cold start: fresh process, import handler module + init (median of 7)")
    print(f"{'function':28} {'ms':>8} {'x import boto3':>15}")
    for name, ms, ratio in rows:
        label = "import boto3 (baseline)" if name == "boto3" else name
        print(f"{label:28} {ms:8.1f} {ratio:15.2f}")
