"""Tool use: BFCL v4 simple / multiple / parallel (data files of the bfcl-eval wheel), scored by call matching.

A response's calls are read as a JSON list of `{"name": ..., "arguments": {...}}` objects
(the format the prompt asks for, and SmolLM2's own) or as Python call expressions
(`f(a=1, b="x")`, BFCL's format); it is right when its calls match the ground truth one to one in any order: same function names, every
required argument present with an allowed value, no argument the ground truth does not
allow ("" among the allowed values marks an optional argument).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
from pathlib import Path
from typing import Any

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.answers import code_block
from capdistill.errors import CapdistillError

CATEGORIES = ("simple_python", "multiple", "parallel")
INSTRUCTION = (
    "You have access to these functions:\n{functions}\n\nUser request: {question}\n\n"
    'Reply only with the calls to make, as a JSON list: [{{"name": "function_name", "arguments": {{"arg": value}}}}]'
)


def bfcl_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise CapdistillError(
            "tool_use needs the BFCL data files: pip install --no-deps bfcl-eval==2026.3.23 (or: make real)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_bfcl(category: str) -> list[dict[str, Any]]:
    """One category's items, each with its `ground_truth` from possible_answer/ (JSON lines files)."""
    root = bfcl_dir()
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]  # noqa: E731
    answers = {a["id"]: a["ground_truth"] for a in read(root / "possible_answer" / f"BFCL_v4_{category}.json")}
    return [{**item, "ground_truth": answers[item["id"]]} for item in read(root / f"BFCL_v4_{category}.json")]


def _value(node: ast.AST) -> Any:
    return ast.literal_eval(node)


def json_calls(text: str) -> list[tuple[str, dict[str, Any]]] | None:
    """Calls written as JSON: a list of (or one) {"name": ..., "arguments": {...}}; None if not that."""
    body = code_block(text).replace("<tool_call>", "").replace("</tool_call>", "").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    if not all(isinstance(i.get("arguments", {}), dict) for i in items):
        return None
    return [(i["name"], i.get("arguments", {})) for i in items]


def parse_calls(text: str) -> list[tuple[str, dict[str, Any]]] | None:
    """The calls of a response, as JSON or as Python call expressions (dotted names kept);
    None if it is not only calls."""
    calls = json_calls(text)
    if calls is not None:
        return calls
    source = code_block(text).strip().strip("[]")
    try:
        tree = ast.parse(source.replace("\n", ", ") if "\n" in source else source, mode="eval")
    except SyntaxError:
        return None
    nodes = tree.body.elts if isinstance(tree.body, ast.Tuple) else [tree.body]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return None
        try:
            calls.append((ast.unparse(node.func), {k.arg: _value(k.value) for k in node.keywords}))
        except (ValueError, SyntaxError):
            return None
    return calls


def _matches(call: tuple[str, dict[str, Any]], truth: dict[str, dict[str, list[Any]]]) -> bool:
    ((name, allowed),) = truth.items()
    fn, args = call
    if fn != name or any(k not in allowed for k in args):
        return False
    for param, values in allowed.items():
        if param in args:
            if not any(_equal(args[param], v) for v in values if v != ""):
                return False
        elif "" not in values:
            return False
    return True


def _equal(got: Any, want: Any) -> bool:
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().lower() == want.strip().lower()
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got) == float(want)
    if isinstance(want, list) and isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(_equal(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(
            any(_equal(got[k], v) for v in (want[k] if isinstance(want[k], list) else [want[k]])) for k in want
        )
    return got == want


def calls_match(calls: list[tuple[str, dict[str, Any]]] | None, truth: list[dict[str, Any]]) -> bool:
    """One-to-one matching of parsed calls to ground-truth calls, in any order."""
    if calls is None or len(calls) != len(truth):
        return False
    remaining = list(truth)
    for call in calls:
        hit = next((t for t in remaining if _matches(call, t)), None)
        if hit is None:
            return False
        remaining.remove(hit)
    return True


def _resolve(value: Any) -> Any:
    """One concrete value of a possible answer: a dict's values are themselves lists of allowed values."""
    if isinstance(value, dict):
        return {k: _resolve(v[0]) if isinstance(v, list) and v else v for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def render_calls(truth: list[dict[str, Any]]) -> str:
    """The ground truth as a reference response in the prompt's JSON format, optional arguments left out."""
    calls = []
    for call in truth:
        ((name, params),) = call.items()
        args = {k: _resolve(v[0]) for k, v in params.items() if v and v[0] != ""}
        calls.append({"name": name, "arguments": args})
    return json.dumps(calls)


def tool_source(sizes: dict[str, int], seed: int = 0) -> PoolSource:
    """BFCL items shuffled once (seeded) and dealt into disjoint splits, categories interleaved."""
    items = [(c, item) for c in CATEGORIES for item in load_bfcl(c)]
    random.Random(f"bfcl/{seed}").shuffle(items)
    truth = {item["id"]: item["ground_truth"] for _, item in items}
    examples = [
        Example(
            "tool_use",
            INSTRUCTION.format(functions=json.dumps(item["function"]), question=item["question"][0][-1]["content"]),
            render_calls(item["ground_truth"]),
            item["id"],
            1,
            category,
        )
        for category, item in items
    ]
    splits, start = {}, 0
    for split in ("probe", "eval", "dev", "train"):
        size = sizes.get(split, 0) if split != "train" else len(examples) - start
        splits[split], start = examples[start : start + size], start + size

    def check(example: Example, prediction: str) -> bool:
        return calls_match(parse_calls(prediction), truth[example.answer])

    source = PoolSource("tool_use", splits, check)
    source.max_new_tokens = 128
    return source
