"""Draw the held-out JSONSchemaBench sample: schemas that are not in the shared corpus (issue 18).

Reads a checkout (or ``git`` mirror) of github.com/guidance-ai/jsonschemabench: per dataset the
same seeded shuffle as the shared corpus (``shared/assets/schemabench/manifest.json``), skipping
the files the shared corpus took and any schema whose content equals one of them, files over
``--max-bytes``, then the next ``--per-dataset`` schemas. Valid instances come from
``maskbench/data/<Dataset>---<file>`` (tests with ``"valid": true`` that ``jsonschema`` accepts).

    python benchmarks/heldout_schemas/sample.py --repo /path/to/jsonschemabench \
        --shared shared/assets/schemabench --out benchmarks/heldout_schemas
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

DATASETS = (
    "Github_trivial", "Github_easy", "Github_medium", "Github_hard",
    "Glaiveai2K", "Kubernetes", "Snowplow", "JsonSchemaStore",
)  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _valid_instances(repo: Path, commit: str, name: str, file: str, schema: Any) -> list[Any]:
    try:
        case = json.loads(_git(repo, "show", f"{commit}:maskbench/data/{name}---{file}"))
    except subprocess.CalledProcessError:
        return []
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    out = []
    for test in case.get("tests", []):
        if test.get("valid") is True:
            try:
                validator(schema).validate(test["data"])
            except (
                jsonschema.ValidationError,
                jsonschema.SchemaError,
                jsonschema.exceptions._WrappedReferencingError,
            ):
                continue
            out.append(test["data"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-dataset", type=int, default=40)
    parser.add_argument("--max-bytes", type=int, default=60_000)
    args = parser.parse_args()
    manifest = json.loads((args.shared / "manifest.json").read_text())
    commit, seed = manifest["commit"], manifest["seed"]
    shared = {_canon(json.loads(p.read_text())) for p in (args.shared / "schemas").glob("*/*.json")}
    out_manifest: dict[str, Any] = {
        "source": manifest["source"], "commit": commit, "seed": seed, "per_dataset": args.per_dataset,
        "max_bytes": args.max_bytes,
        "rule": "the shared corpus's shuffle per dataset, continued: skip the files it took, schemas "
        "equal in content to any shared one, files > max_bytes; take the next per_dataset",
        "datasets": {},
    }  # fmt: skip
    for name in DATASETS:
        taken_shared = {t["file"] for t in manifest["datasets"][name]["taken"]}
        files = sorted(
            line.rsplit("/", 1)[-1]
            for line in _git(args.repo, "ls-tree", "--name-only", f"{commit}:data/{name}").split()
        )
        random.Random(seed).shuffle(files)
        taken: list[dict[str, Any]] = []
        duplicates: list[str] = []
        for file in files:
            if len(taken) == args.per_dataset:
                break
            if file in taken_shared:
                continue
            try:
                text = _git(args.repo, "show", f"{commit}:data/{name}/{file}")
            except subprocess.CalledProcessError:  # a mirror may leave its largest files out
                continue
            if len(text.encode()) > args.max_bytes:
                continue
            schema = json.loads(text)
            if _canon(schema) in shared:
                duplicates.append(file)
                continue
            instances = _valid_instances(args.repo, commit, name, file, schema)
            for kind, value in (("schemas", schema), ("instances", instances)):
                path = args.out / kind / name / file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
            taken.append({"file": file, "bytes": len(text.encode()), "valid_instances": len(instances)})
        out_manifest["datasets"][name] = {
            "available": len(files),
            "taken": taken,
            "skipped_equal_to_shared": duplicates,
        }
    (args.out / "manifest.json").write_text(json.dumps(out_manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
