#!/usr/bin/env python3
"""Line coverage of the Rust core and the Python package (issue 21); docs/coverage.md says how.

python .ci/coverage.py run [VENV]  the instrumented runs in a venv (target/coverage-venv), report, docs, check
python .ci/coverage.py env [--off] shell lines to eval: instrument the builds and runs that follow (--off: stop)
python .ci/coverage.py report      merge what the runs left into target/coverage/summary.json
python .ci/coverage.py docs        rewrite the table in docs/coverage.md from summary.json
python .ci/coverage.py check       print the totals; fail under 80 %, or a module under 70 % with no reason
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "coverage"
SUMMARY = OUT / "summary.json"
DOC = ROOT / "docs" / "coverage.md"
REASONS = ROOT / "docs" / "coverage-reasons.toml"
VENV = ROOT / "target" / "coverage-venv"
TOTAL_BAR, MODULE_BAR = 80.0, 70.0
# Not product code: dependencies, the standard library, and test files (src/**/tests/*, tests.rs,
# tests_*.rs).
IGNORE = r"/\.cargo/|/rustc/|/target/|/tests/|/tests(_[A-Za-z0-9_]+)?\.rs$"
BEGIN, END = "<!-- BEGIN generated table -->", "<!-- END generated table -->"

Counts = dict[str, list[int]]  # path from the root -> [lines covered, lines]


def out_of(cmd: list[str], **kwargs: object) -> str:
    """The standard output of a command that must succeed."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout  # type: ignore[call-overload, no-any-return]


def log(msg: str) -> None:
    print(f"coverage: {msg}", file=sys.stderr, flush=True)


def plain_env() -> dict[str, str]:
    """This process's environment without cargo-llvm-cov's (which its own commands must not inherit)."""
    wrapped = "cargo-llvm-cov" in os.environ.get("RUSTC_WRAPPER", "")
    return {k: v for k, v in os.environ.items() if "CARGO_LLVM_COV" not in k and not (wrapped and k == "RUSTC_WRAPPER")}


def cargo_env() -> dict[str, str]:
    """cargo-llvm-cov's instrumentation: a rustc wrapper that instruments this crate only."""
    env = {}
    for line in out_of(["cargo", "llvm-cov", "show-env", "--sh"], cwd=ROOT, env=plain_env()).splitlines():
        m = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if m:
            env[m[1]] = shlex.split(m[2])[0] if m[2] else ""
    # One file per binary and pool slot, merged online: hundreds of Python processes, a few files.
    env["LLVM_PROFILE_FILE"] = str(OUT / "rust" / "%4m.profraw")
    env["COVERAGE_PROCESS_START"] = str(ROOT / "pyproject.toml")  # coverage's .pth starts it in every process
    env["PRISMQ_COVERAGE_DATA"] = str(OUT / "python" / ".coverage")  # [tool.coverage.run] data_file
    return env


def start() -> dict[str, str]:
    """Fresh data, and no uninstrumented build of the crate that cargo would take as up to date."""
    env = cargo_env()
    clean_workspace(env)
    shutil.rmtree(OUT, ignore_errors=True)
    for sub in ("rust", "python", "late"):
        (OUT / sub).mkdir(parents=True)
    return env


def clean_workspace(env: dict[str, str]) -> None:
    """Removes the crate's build artifacts (cargo-llvm-cov finds the target directory in env)."""
    out_of(["cargo", "llvm-cov", "clean", "--workspace"], cwd=ROOT, env={**plain_env(), **env})


def env_cmd(off: bool) -> None:
    if off:  # the builds after this are not instrumented; the installed extension still is
        names = " ".join(n for n in cargo_env() if n not in ("LLVM_PROFILE_FILE",))
        print(f"unset {names}")
        print(f"export LLVM_PROFILE_FILE={shlex.quote(str(OUT / 'late' / '%4m.profraw'))}")
    else:
        for name, value in start().items():
            print(f"export {name}={shlex.quote(value)}")


def llvm_tool(name: str) -> str:
    sysroot = out_of(["rustc", "--print", "sysroot"])
    host = re.search(r"host: (\S+)", out_of(["rustc", "-vV"]))
    tool = Path(sysroot.strip()) / "lib" / "rustlib" / (host[1] if host else "") / "bin" / name
    if not tool.exists():
        sys.exit(f"coverage: no {tool}: rustup component add llvm-tools-preview")
    return str(tool)


def test_only_lines(text: str) -> set[int]:
    """Lines of #[cfg(test)] items (rustfmt'ed: an item's closing brace is at its own indentation)."""
    lines, skip, i = text.splitlines(), set[int](), 0
    while i < len(lines):
        if re.fullmatch(r"#\[cfg\((test|all\(test,.*)\)\]", lines[i].strip()):
            j = i + 1
            while j < len(lines) and lines[j].lstrip().startswith("#["):
                j += 1
            k = j
            if j < len(lines) and not lines[j].rstrip().endswith(";"):
                indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
                k = next((n for n in range(j + 1, len(lines)) if lines[n].startswith(indent + "}")), j)
            skip.update(range(i + 1, k + 2))
            i = k
        i += 1
    return skip


def extension_module(python: str) -> Path:
    """The installed extension (what the pytest run loaded), found without importing it."""
    code = "import sys\nfrom importlib import metadata\nd = metadata.distribution('prismq_queue')\n"
    code += "print(*[d.locate_file(f) for f in d.files or [] if f.name.startswith('_prismq_queue.')], sep='\\n')"
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return Path(next(p for p in out if not p.endswith(".pyi")))


def rust_report(python: str) -> Counts:
    profraw = sorted((OUT / "rust").glob("*.profraw"))
    if not profraw:
        sys.exit("coverage: no Rust profiles in target/coverage/rust (did the runs have `env`'s variables?)")
    profdata = OUT / "rust.profdata"
    merge = [llvm_tool("llvm-profdata"), "merge", "-sparse", "--failure-mode=all", "-o", str(profdata)]
    subprocess.run(merge + [str(p) for p in profraw], check=True)
    # The test binaries of this run (`start` removed older ones) and the extension module.
    deps = ROOT / "target" / "debug" / "deps"
    objects = [p for p in deps.glob("prismq_queue-*") if p.suffix == "" and os.access(p, os.X_OK)]
    objects.append(extension_module(python))
    objects = [p for p in objects if b"__llvm_covfun" in p.read_bytes()]
    log(f"{len(profraw)} profiles ({sum(p.stat().st_size for p in profraw) >> 20} MiB), objects: {len(objects)}")
    cmd = [llvm_tool("llvm-cov"), "export", "-format=lcov", f"-instr-profile={profdata}"]
    cmd += [f"-ignore-filename-regex={IGNORE}", str(objects[0])] + [f"-object={p}" for p in objects[1:]]
    lcov = out_of(cmd)
    (OUT / "rust.lcov").write_text(lcov)  # line by line, for finding what no test runs
    hits: dict[str, dict[int, int]] = {}
    current: dict[int, int] = {}
    for line in lcov.splitlines():
        if line.startswith("SF:"):
            current = hits.setdefault(line[3:], {})
        elif line.startswith("DA:"):
            num, count = line[3:].split(",")[:2]
            current[int(num)] = max(current.get(int(num), 0), int(count))
    counts: Counts = {}
    for name, lines in hits.items():
        path = Path(name).resolve()
        if not path.is_relative_to(ROOT / "src"):
            continue
        skip = test_only_lines(path.read_text())
        kept = [c for n, c in lines.items() if n not in skip]
        counts[path.relative_to(ROOT).as_posix()] = [sum(1 for c in kept if c > 0), len(kept)]
    return counts


def python_report(python: str) -> Counts:
    env = {**os.environ, "PRISMQ_COVERAGE_DATA": str(OUT / "python" / ".coverage")}
    cov = [python, "-m", "coverage"]
    subprocess.run(cov + ["combine", "--quiet"], cwd=ROOT, env=env, check=True)
    out = OUT / "python.json"
    subprocess.run(cov + ["json", "--quiet", "-o", str(out)], cwd=ROOT, env=env, check=True)
    files = json.loads(out.read_text())["files"]
    return {
        name: [f["summary"]["covered_lines"], f["summary"]["num_statements"]]
        for name, f in files.items()
        if name.startswith("python/prismq_queue/")
    }


def report(python: str) -> None:
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    summary = {
        "commit": commit.stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rust": rust_report(python),
        "python": python_report(python),
    }
    SUMMARY.write_text(json.dumps(summary, indent=1, sort_keys=True))
    # The instrumented crate would otherwise count as up to date for the next, plain build.
    clean_workspace(cargo_env())
    log(f"wrote {SUMMARY.relative_to(ROOT)}")


def pct(covered: int, total: int) -> float:
    return 100.0 * covered / total if total else 100.0


def totals(counts: Counts) -> tuple[int, int]:
    return sum(c for c, _ in counts.values()), sum(t for _, t in counts.values())


def load() -> tuple[dict[str, object], dict[str, str]]:
    if not SUMMARY.exists():
        sys.exit("coverage: no target/coverage/summary.json: run `python .ci/coverage.py run` (or report)")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # a dependency of the package on these
        import tomli as tomllib
    reasons = tomllib.loads(REASONS.read_text()).get("reasons", {}) if REASONS.exists() else {}
    return json.loads(SUMMARY.read_text()), reasons


def total_line(lang: str, counts: Counts) -> str:
    covered, total = totals(counts)
    return f"{lang} lines: {pct(covered, total):.1f} % ({covered} of {total})"


def docs() -> None:
    summary, reasons = load()
    out = [BEGIN, "", "<!-- Generated by `python .ci/coverage.py docs` from the data of `python .ci/coverage.py run`"]
    out += ["or of .ci/run; do not edit by hand: reasons go in docs/coverage-reasons.toml. -->"]
    out += ["", f"Measured at `{summary['commit']}` on {summary['date']}.", ""]
    for lang, key in (("Rust", "rust"), ("Python", "python")):
        counts: Counts = summary[key]  # type: ignore[assignment]
        out += [f"**{total_line(lang, counts)}**", ""]
    for lang, key in (("Rust", "rust"), ("Python", "python")):
        counts = summary[key]  # type: ignore[assignment]
        out += [f"### {lang}", "", "| module | covered | lines | % | why not more |", "|---|--:|--:|--:|---|"]
        for name, (covered, total) in sorted(counts.items(), key=lambda kv: (pct(*kv[1]), kv[0])):
            if total:
                reason = reasons.get(name, "") if pct(covered, total) < MODULE_BAR else ""
                out.append(f"| `{name}` | {covered} | {total} | {pct(covered, total):.1f} | {reason} |")
        out.append("")
    out.append(END)
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + "\n".join(out) + rest.split(END, 1)[1])
    log(f"wrote {DOC.relative_to(ROOT)}")


def check() -> int:
    summary, reasons = load()
    failures = []
    for lang, key in (("Rust", "rust"), ("Python", "python")):
        counts: Counts = summary[key]  # type: ignore[assignment]
        if pct(*totals(counts)) < TOTAL_BAR:
            failures.append(f"{lang} total under {TOTAL_BAR:.0f} %")
        low = [n for n, (c, t) in counts.items() if pct(c, t) < MODULE_BAR and not reasons.get(n)]
        for name in sorted(low):
            print(f"coverage: {name} is under {MODULE_BAR:.0f} % with no reason in docs/coverage-reasons.toml")
        if low:
            failures.append(f"{len(low)} {lang} modules under {MODULE_BAR:.0f} % with no reason")
    print(f"== coverage at {summary['commit']} (bar {TOTAL_BAR:.0f} % each; docs/coverage.md has the table)")
    if failures:
        print("coverage: FAILED: " + "; ".join(failures))
    print("coverage: " + total_line("Rust", summary["rust"]))  # type: ignore[arg-type]
    print("coverage: " + total_line("Python", summary["python"]))  # type: ignore[arg-type]
    return 1 if failures else 0


def readme_test_command() -> str:
    block = ROOT.joinpath("README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[1]


def run(venv: Path) -> int:
    """Locally, what .ci/run does: cargo test --features postgres, then the README's test command."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, **start(), "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    began = time.monotonic()
    failed = subprocess.run(["cargo", "test", "--features", "postgres"], cwd=ROOT, env=env).returncode != 0
    command = readme_test_command()
    log(f"README test command: {command}")
    failed |= subprocess.run(["bash", "-c", command], cwd=ROOT, env=env).returncode != 0
    log(f"instrumented runs took {time.monotonic() - began:.0f} s{' (some tests FAILED)' if failed else ''}")
    report(str(venv / "bin" / "python"))
    docs()
    return check() or int(failed)


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    arg = sys.argv[2] if len(sys.argv) > 2 else ""
    if cmd == "env":
        env_cmd(arg == "--off")
    elif cmd == "report":
        report(arg or sys.executable)
    elif cmd == "docs":
        docs()
    elif cmd == "check":
        return check()
    elif cmd == "run":
        return run(Path(arg) if arg else VENV)
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
