"""Coverage of real-world JSON Schemas through llmrun's bounded grammar path (issue 18).

Over the JSONSchemaBench sample in ``shared/assets/schemabench`` (per dataset: schemas and
the benchmark's valid instances), with a real tokenizer (pythia's by default) and a token
budget (512), for each schema:

* **refused**: llmrun refuses it before generation (``OutputSpec.for_schema``, the normalizer,
  the bounds, the grammar compiler), counted by the keyword the error names;
* else one seeded random walk of the constrained decoder (random logits, the best allowed
  token each step: what a model with random weights writes) gives a text that is
  **valid** (``OutputSpec.parse`` accepts it), **rejected** (``parse`` refuses it, naming the
  keyword: llmrun never returns it) or **unclosed** (the budget ran out: must be 0);
* **instances**: the benchmark's valid instances, written compactly with their keys in the
  schema's order (as the grammar writes them) and tokenized. An instance is *allowed* when
  that takes at most the budget; an allowed instance is fed to the same constraint as a
  model's tokens would be, and is **accepted** when every token goes through unchanged and
  the reply can stop. One that is not is counted against llmrun's budget (``tracker``: the
  budget tracker replaced a token; ``bounds``: a static bound of the grammar's schema, such as
  a number's digits or a pattern's width) or against the engine (``normalized``: the
  normalized schema is tighter than the original, e.g. no extra keys next to named
  properties; ``grammar``: xgrammar refuses it); instances of refused schemas are counted
  apart, by the keyword of the refusal (``max_new_tokens``, a smallest reply longer than the
  budget in bytes, counts against llmrun's budget, any other keyword against the engine).
  ``instances_share`` is accepted / (allowed - engine).

    python benchmarks/bench_schemas.py                       # the whole sample, ~ a few minutes
    python benchmarks/bench_schemas.py --datasets Glaiveai2K --limit 10
    python benchmarks/bench_schemas.py --corpus DIR --tokenizer tokenizer.json --out results.json
    python benchmarks/bench_schemas.py --corpus benchmarks/heldout_schemas   # held-out sample (README there)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from llmrun.backends.local import grammar
from llmrun.backends.local.schema_normalize import normalize_schema
from llmrun.errors import LLMRunError, OutputValidationError
from llmrun.runner import OutputSpec

HERE = Path(__file__).resolve().parent
#: Published empirical coverage (JSONSchemaBench, Table 4): Guidance / llama.cpp / Outlines / XGrammar.
PUBLISHED = {
    "Glaiveai2K": (0.96, 0.95, 0.95, 0.93),
    "Github_easy": (0.86, 0.75, 0.59, 0.79),
    "Snowplow": (0.82, 0.74, 0.36, None),
    "Github_medium": (0.69, 0.57, 0.29, 0.52),
    "Kubernetes": (0.91, 0.76, 0.57, 0.07),
    "Github_hard": (0.41, 0.39, 0.03, 0.28),
    "JsonSchemaStore": (0.30, 0.38, 0.09, 0.33),
}
_KEYWORD = re.compile(
    r"(max_new_tokens|\$ref|recursive|allOf|anyOf|oneOf|not|multipleOf|pattern|format|uniqueItems|contains|"
    r"maxProperties|minProperties|minItems|maxItems|minLength|maxLength|required|enum|const|"
    r"additionalProperties|dependentRequired|dependencies|if|then|else|type|grammar|Any|JSON Schema)"
)


def _default_corpus() -> Path | None:
    for parent in HERE.parents:
        candidate = parent / "shared" / "assets" / "schemabench"
        if candidate.is_dir():
            return candidate
    return None


def keyword(message: str) -> str:
    """The first JSON-Schema keyword (or budget) an error message names, for the tally."""
    found = re.findall(r"'([^']+)'|\b(\w+)\b", message)
    words = {w for pair in found for w in pair if w}
    for match in _KEYWORD.finditer(message):
        if match.group(1) in words or match.group(1).startswith("$"):
            return match.group(1)
    return "other"


def walk(
    constraint: grammar.JsonSchemaConstraint, width: int, budget: int, seed: int
) -> tuple[list[int], bool]:
    """One seeded random walk: random logits, the best allowed token each step (random weights)."""
    gen = torch.Generator().manual_seed(seed)
    stop = set(_stop_ids(constraint))
    tokens: list[int] = []
    for _ in range(budget):
        logits = torch.randn(1, width, generator=gen)  # [1, V]
        constraint.mask_logits(logits)
        chosen = logits.argmax(dim=-1)  # [1]
        constraint.advance(chosen)  # may replace the token (in place) to keep the reply closable
        token = int(chosen[0])
        if token in stop:
            return tokens, True
        tokens.append(token)
        if constraint.finished()[0]:
            return tokens, True
    return tokens, False


def _stop_ids(constraint: grammar.JsonSchemaConstraint) -> list[int]:
    bits = constraint.compiled.tables.stop_bits
    ids = []
    for word, value in enumerate(bits.tolist()):
        for bit in range(32):
            if (value >> bit) & 1:
                ids.append(word * 32 + bit)
    return ids


def accepts(tokenizer: Any, constraint: grammar.JsonSchemaConstraint, width: int, text: str) -> bool:
    """Whether the constraint lets the decoder write exactly ``text`` (no token replaced) and then stop."""
    for token in tokenizer.encode(text, add_special_tokens=False):
        logits = torch.zeros(1, width)
        constraint.mask_logits(logits)
        if constraint.finished()[0] or not bool(torch.isfinite(logits[0, token])):
            return False
        chosen = torch.tensor([token])
        constraint.advance(chosen)
        if int(chosen[0]) != token:  # replaced: the budget could not close the reply after it
            return False
    return constraint.finished()[0] or _can_stop(constraint, width)


def why_refused(plain: Any, bounded: Any, compiled: grammar.CompiledJsonGrammar, text: str) -> str:
    """Who refuses an instance the constraint did not accept: the engine or llmrun's budget."""
    import jsonschema
    import xgrammar as xgr

    value = json.loads(text)
    if not jsonschema.Draft202012Validator(plain).is_valid(value):
        return "normalized"
    if not jsonschema.Draft202012Validator(bounded).is_valid(value):
        return "bounds"
    matcher = xgr.GrammarMatcher(compiled.grammar)
    if not (matcher.accept_string(text) and matcher.is_completed()):
        return "grammar"
    return "tracker"


def _can_stop(constraint: grammar.JsonSchemaConstraint, width: int) -> bool:
    logits = torch.zeros(1, width)
    constraint.mask_logits(logits)
    return any(bool(torch.isfinite(logits[0, i])) for i in _stop_ids(constraint))


def in_schema_order(value: Any, schema: Any) -> Any:
    """``value`` with its object keys in the order the grammar of ``schema`` writes them."""
    if isinstance(schema, dict) and "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if isinstance(b, dict)]
        fitting = [
            b for b in branches if isinstance(value, dict) and set(value) <= set(b.get("properties", {}))
        ]
        return in_schema_order(value, (fitting or branches or [{}])[0])
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: in_schema_order(value[k], props.get(k, extra)) for k in keys}
    if isinstance(value, list) and isinstance(schema, dict):
        prefix = schema.get("prefixItems") or []
        return [
            in_schema_order(v, prefix[i] if i < len(prefix) else schema.get("items"))
            for i, v in enumerate(value)
        ]
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _share(inst: collections.Counter[str]) -> float | None:
    """Accepted instances over those the budget allows and the engine can express."""
    expressible = inst["allowed"] - inst["schema_refused"] - inst["normalized"] - inst["grammar"]
    return round(inst["accepted"] / expressible, 3) if expressible > 0 else None


def run(
    corpus: Path, tokenizer: Any, width: int, budget: int, datasets: list[str], limit: int | None
) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for name in datasets:
        tally: collections.Counter[str] = collections.Counter()
        refused: collections.Counter[str] = collections.Counter()
        rejected: collections.Counter[str] = collections.Counter()
        inst: collections.Counter[str] = collections.Counter()
        inst_refused: collections.Counter[str] = collections.Counter()  # refused schemas, by keyword
        why: dict[str, str] = {}  # file -> the error of each refused or rejected schema
        missed: dict[str, list[str]] = {}  # file -> why each allowed instance was not accepted
        files = sorted((corpus / "schemas" / name).glob("*.json"))[:limit]
        started = time.perf_counter()
        for i, path in enumerate(files):
            schema = json.loads(path.read_text())
            inst_path = corpus / "instances" / name / path.name
            instances = json.loads(inst_path.read_text()) if inst_path.exists() else []
            inst["instances"] += len(instances)
            try:
                spec = OutputSpec.for_schema(schema, name=path.stem)
                constraint = grammar.json_constraint(
                    tokenizer, spec.json_schema, 1, width, max_new_tokens=budget
                )
            except LLMRunError as exc:
                tally["refused"] += 1
                refused[keyword(str(exc))] += 1
                why[path.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                fits = sum(
                    len(tokenizer.encode(_compact(v), add_special_tokens=False)) <= budget for v in instances
                )
                inst["allowed"] += fits
                # a schema whose smallest reply (one token per byte) passes the budget counts against
                # llmrun's budget; any other refusal is the engine's
                inst["budget_refused" if keyword(str(exc)) == "max_new_tokens" else "schema_refused"] += fits
                inst_refused[keyword(str(exc))] += fits
                continue
            tokens, closed = walk(constraint, width, budget, seed=i)
            text = tokenizer.decode(tokens)
            if not closed:
                tally["unclosed"] += 1
                why[path.name] = f"unclosed after {len(tokens)} tokens: {text[-200:]!r}"
            else:
                try:
                    spec.parse(text)
                    tally["valid"] += 1
                except OutputValidationError as exc:
                    tally["rejected"] += 1
                    rejected[keyword(str(exc).split(" at ")[0])] += 1
                    why[path.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            bounded = json.loads(constraint.compiled.schema_json)
            for value in instances:
                compact = _compact(in_schema_order(value, bounded))
                if len(tokenizer.encode(compact, add_special_tokens=False)) > budget:
                    continue
                inst["allowed"] += 1
                again = grammar.json_constraint(tokenizer, spec.json_schema, 1, width, max_new_tokens=budget)
                if accepts(tokenizer, again, width, compact):
                    inst["accepted"] += 1
                    continue
                reason = why_refused(normalize_schema(spec.json_schema), bounded, again.compiled, compact)
                inst[reason] += 1
                missed.setdefault(path.name, []).append(reason)
        n = len(files)
        per[name] = {
            "schemas": n,
            **{k: tally[k] for k in ("valid", "refused", "rejected", "unclosed")},
            "valid_share": round(tally["valid"] / n, 3) if n else None,
            "refused_by": dict(refused.most_common()),
            "rejected_by": dict(rejected.most_common()),
            "instances": inst["instances"],
            "instances_allowed": inst["allowed"],
            "instances_accepted": inst["accepted"],
            "instances_share": _share(inst),
            "instances_missed": {k: inst[k] for k in ("tracker", "bounds", "normalized", "grammar")},
            "instances_of_refused_schemas": dict(inst_refused.most_common()),
            "instances_missed_by_file": missed,
            "errors": why,
            "published_best": max((v for v in PUBLISHED.get(name, ()) if v is not None), default=None),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps({name: per[name]}), flush=True)
    return per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    corpus = _default_corpus()
    parser.add_argument(
        "--corpus", type=Path, default=corpus, help="schemabench folder (schemas/, instances/)"
    )
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: pythia's)")
    parser.add_argument("--width", type=int, default=50304, help="logits width (pythia-70m: 50304)")
    parser.add_argument("--budget", type=int, default=512, help="max_new_tokens")
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--limit", type=int, default=None, help="schemas per dataset")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "schemas.json")
    args = parser.parse_args(argv)
    if args.corpus is None or not args.corpus.is_dir():
        print("no schemabench corpus found; pass --corpus DIR", file=sys.stderr)
        return 2
    from transformers import PreTrainedTokenizerFast

    assets = [c.parent for c in (args.corpus, corpus) if c is not None]
    pythia = [a / "tokenizers" / "pythia" / "tokenizer.json" for a in assets]
    tok_file = args.tokenizer or next((p for p in pythia if p.is_file()), pythia[0])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tok_file))
    for eos in ("<|endoftext|>", "</s>"):
        if tokenizer.eos_token is None and eos in tokenizer.get_vocab():
            tokenizer.eos_token = eos
    width = max(args.width, len(tokenizer))
    datasets = args.datasets or sorted(p.name for p in (args.corpus / "schemas").iterdir() if p.is_dir())
    torch.set_num_threads(1)
    started = time.perf_counter()
    per = run(args.corpus, tokenizer, width, args.budget, datasets, args.limit)
    total = {
        k: sum(d[k] for d in per.values()) for k in ("schemas", "valid", "refused", "rejected", "unclosed")
    }
    for key in ("instances", "instances_allowed", "instances_accepted"):
        total[key] = sum(d[key] for d in per.values())
    for key in ("instances_missed", "instances_of_refused_schemas"):
        merged: collections.Counter[str] = collections.Counter()
        for d in per.values():
            merged.update(d[key])
        total[key] = dict(merged)
    refused = total["instances_of_refused_schemas"]
    expressible = (
        total["instances_allowed"]
        - sum(n for k, n in refused.items() if k != "max_new_tokens")
        - total["instances_missed"].get("normalized", 0)
        - total["instances_missed"].get("grammar", 0)
    )
    total["instances_share"] = round(total["instances_accepted"] / expressible, 3) if expressible else None
    result = {"budget": args.budget, "per_dataset": per, "total": total,
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"total": total, "seconds": result["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
