"""The docs-test harness itself: what it runs, and that stale docs fail."""

from __future__ import annotations

import pytest

from tests.docs.harness import (
    ExampleFailure,
    PageRunner,
    console_commands,
    json_diff,
    output_diff,
    parse_page,
)

PAGE = """# t

<!-- docs-test: skip (needs real weights) -->
```bash
finerank serve --model /models/Qwen3-Reranker-0.6B
```

```console
$ echo hello \\
    world
hello world
$ true
```

```python
print(1 + 1)
```

```text
2
```

Some prose.

```json
{"not": "an output: prose before it"}
```

```bash
echo '{"a": 1}'
```
<!-- docs-test: output -->
```json
{"a": 1}
```
"""


def test_parse_page_markers_and_outputs():
    blocks = parse_page(PAGE, "t.md")
    assert [(b.lang, b.line) for b in blocks] == [
        ("bash", 4),
        ("console", 8),
        ("python", 15),
        ("json", 25),
        ("bash", 29),
    ]
    assert blocks[0].skip_reason == "needs real weights"
    assert blocks[2].expected == "2"
    assert blocks[3].kind is None  # prose in between: not the python block's output
    assert blocks[4].expected == '{"a": 1}'
    assert console_commands(blocks[1].text) == [
        ("echo hello \\\n    world", "hello world"),
        ("true", ""),
    ]


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (
            "laws: 3 files, 208 chunks in 35.2 s (5.9 chunks/s)",
            "laws: 3 files, 208 chunks in 1.0 s (99 chunks/s)",
            True,
        ),
        ("laws: 3 files, 208 chunks", "laws: 3 files, 210 chunks", False),  # stale count
        ("score 0.2183", "score 0.21834", True),
        ("score 0.2183", "score 0.2190", False),
        ("│    1 │     0 │ 0.2183 │", "│ 1 │ 0 │ 0.2183 │", True),  # widths may differ
        ("┏━━━━━━┳━━━┓", "┏━━┳━━━━━━━━┓", True),
        ("id 1234...", "id 1234abcd", True),
        ("a\n...\nz", "a\nb\nc\nz", True),
        ("a\nz", "a\nb\nz", False),  # an unexpected line
        ("--top-n 2", "--top-k 2", False),
        (
            "ScoreResult(index=0, score=0.14733590373060398)",
            "ScoreResult(index=0, score=0.147335912)",
            True,
        ),
        ("2026-11-30 09:21:53,695 INFO ready", "2027-01-02 10:00:00,001 INFO ready", True),
        (
            "id 19327718-8f9c-4001-9624-2482c14dc99f",
            "id 535fa1c5-3d1c-42d4-bff4-d22ca4037062",
            True,
        ),
    ],
)
def test_text_matching(expected, actual, ok):
    assert (output_diff(expected, actual) is None) is ok


def test_json_matching():
    doc = {"id": "x", "results": [{"index": 1, "relevance_score": 0.1}], "meta": {"n": 2}}
    same = {
        "id": "other",
        "results": [{"index": 1, "relevance_score": 0.1000001}],
        "meta": {"n": 2},
    }
    assert json_diff(doc, same) is None
    assert "keys differ" in json_diff(doc, {**same, "extra": 1})
    assert "keys differ" in json_diff(doc, {k: v for k, v in same.items() if k != "meta"})
    assert "expected 1 items" in json_diff(doc, {**same, "results": []})
    assert "expected 2" in json_diff(doc, {**same, "meta": {"n": 3}})
    assert json_diff({"text": "第六十三条..."}, {"text": "第六十三条 违反本法"}) is None
    assert json_diff({"a": [1, "..."]}, {"a": [1, 2, 3]}) is None
    assert json_diff({"a": 1, "...": "..."}, {"a": 1, "b": 2}) is None
    assert json_diff({"timings_ms": {"rerank": 19.1}}, {"timings_ms": {"rerank": 3.0}}) is None
    pretty = '{"a": 1,\n "b": [1, 2]}'
    assert output_diff(pretty, '{"a":1,"b":[1,2]}') is None
    assert output_diff(pretty, "Internal Server Error") is not None


def test_page_runner_shell_state_errors_and_python(tmp_path):
    import os

    runner = PageRunner(tmp_path, dict(os.environ))
    try:
        blocks = parse_page(
            "```console\n$ GREETING=hi\n$ echo $GREETING there\nhi there\n```\n\n"
            "```python\nvalue = 40\n```\n\n```python\nprint(value + 2)\n```\n```text\n42\n```\n",
            "p.md",
        )
        for block in blocks:
            runner.run_block(block)
        failing = parse_page("```bash\nfalse\necho not reached\n```\n", "f.md")[0]
        with pytest.raises(ExampleFailure, match="exit status 1"):
            runner.run_block(failing)
        stale = parse_page("```console\n$ echo 3 chunks\n2 chunks\n```\n", "s.md")[0]
        with pytest.raises(ExampleFailure, match="differs"):
            runner.run_block(stale)
        with pytest.raises(ExampleFailure, match="installs packages"):
            runner.run_block(parse_page("```bash\npip install finerank\n```\n", "i.md")[0])
        with pytest.raises(ExampleFailure, match="synopsis"):
            runner.run_block(parse_page("```bash\nfinerank x (--a | --b\n```\n", "y.md")[0])
        expected_error = parse_page(
            "<!-- docs-test: exit=2 -->\n```console\n$ (exit 2)\n```\n", "e.md"
        )[0]
        runner.run_block(expected_error)
    finally:
        runner.close()
