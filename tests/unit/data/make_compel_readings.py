"""Regenerate compel_prompt_suite.json: the prompts of compel's own parser tests, read by compel's own parser.

Data, not code: the prompts are the string literals that compel 2.5.1's `test/test_prompt_parser.py` (in its
source distribution on PyPI; compel is MIT-licensed, Copyright 2023 Damian Stewart) passes to its parser; the
readings are what compel 2.5.1's `PromptParser.parse_conjunction` returns for them. Nothing of compel's code is
copied; the test file is read with `ast` to list the prompts.

Run once, with compel 2.5.1 installed (the venv has it as a test dependency; only compel's `prompt_parser.py` is
loaded, which needs pyparsing but not torch). The unit tests reuse `compel_parser`/`reading` for the live checks:

    pip download compel==2.5.1 --no-binary :all: --no-deps -d /tmp/compel-sdist
    python tests/unit/data/make_compel_readings.py /tmp/compel-sdist/compel-2.5.1.tar.gz
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

VERSION = "2.5.1"
TEST_FILE = f"compel-{VERSION}/test/test_prompt_parser.py"
OUT = Path(__file__).with_name("compel_prompt_suite.json")
CALLS = ("parse_prompt", "assert_if_prompt_string_not_untouched")  # the two ways compel's tests hand a prompt over

# compel syntax the hosted API does not document: these prompts are kept with the reason, but not compared
OUT_OF_SCOPE = [
    (r"\.swap\(", "'.swap()' (cross-attention control) is not in the hosted API's compel syntax"),
    (r"\.attend\(", "'.attend()' is not in the hosted API's compel syntax (it documents '(words)1.2' and '+'/'-')"),
    (r"(with|use)Lora\(", "'withLora()'/'useLora()' is not in the hosted API's compel syntax (LoRAs are 'lora[]')"),
    (r"no_normalize", "'.blend(..., no_normalize)' is not in the hosted API's compel syntax"),
]


def prompts(sdist: Path) -> list[tuple[int, str]]:
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(TEST_FILE)
        assert member is not None
        source = member.read().decode()
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CALLS
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            text = node.args[0].value
            found[text] = min(found.get(text, node.lineno), node.lineno)
    return sorted(((line, text) for text, line in found.items()), key=lambda x: (x[0], x[1]))


@functools.cache
def compel_parser() -> ModuleType:
    """compel's own `prompt_parser` module, loaded by itself (it needs only pyparsing; the package's __init__
    imports torch and diffusers). Raises ModuleNotFoundError when compel is not installed."""
    spec = importlib.util.find_spec("compel")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("compel is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "prompt_parser.py"
    module_spec = importlib.util.spec_from_file_location("compel_prompt_parser", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def reading(text: str) -> dict[str, Any]:
    cp = compel_parser()
    try:
        conj = cp.PromptParser().parse_conjunction(text)
    except cp.PromptParser.ParsingException as exc:
        return {"refused": str(exc).split(" [")[0]}

    def flat(p: Any) -> list[list[Any]]:
        return [[f.text, f.weight] for f in p.children]

    parts = [{"blend": [flat(q) for q in p.prompts], "weights": [float(w) for w in p.weights]}
             if isinstance(p, cp.Blend) else {"fragments": flat(p)} for p in conj.prompts]
    return {"parts": parts, "weights": [float(w) for w in conj.weights]}


def main(sdist: Path) -> None:
    assert version("compel") == VERSION, f"compel {VERSION} must be installed, found {version('compel')}"
    cases = []
    for line, text in prompts(sdist):
        why = next((reason for pattern, reason in OUT_OF_SCOPE if re.search(pattern, text)), None)
        case: dict[str, Any] = {"line": line, "prompt": text}
        if why:
            case["outOfScope"] = why
        else:
            case["compel"] = reading(text)
        cases.append(case)
    body = {
        "source": f"prompts: the string literals passed to the parser in compel {VERSION}'s {TEST_FILE.split('/', 1)[1]} "
                  f"(sdist compel-{VERSION}.tar.gz on PyPI, https://github.com/damian0815/compel; MIT licence, "
                  "Copyright 2023 Damian Stewart); 'compel': what compel's own PromptParser.parse_conjunction "
                  f"{VERSION} returns for each (flattened fragments [text, weight], blend/conjunction weights, or "
                  "'refused' with its ParsingException). 'line' is the first line of the test file using the prompt. "
                  "Generated by make_compel_readings.py; data from compel's tests, none of compel's code.",
        "scope": "in scope: prompts using only the compel syntax the hosted API documents (+/- and number weights, "
                 "quotes, nesting, escapes, .blend(), .and(), unbalanced brackets); out of scope: '.swap()', "
                 "'.attend()', 'withLora()'/'useLora()', 'no_normalize' (each case says why)",
        "cases": cases,
    }
    head = json.dumps({k: v for k, v in body.items() if k != "cases"}, indent=1, ensure_ascii=False)[:-2]
    rows = ",\n  ".join(json.dumps(c, ensure_ascii=False) for c in cases)
    OUT.write_text(f'{head},\n "cases": [\n  {rows}\n ]\n}}\n')
    print(f"{len(cases)} prompts, {sum('compel' in c for c in cases)} in scope -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
