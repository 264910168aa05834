"""Grading model answers: compare an extracted answer (`answers`) with the gold answer.

Plain Python with no Dagster imports. Equality goes through `math-verify` (sympy underneath), which can
hang on pathological inputs (e.g. `(10^{100000})!`). Its own timeouts use `signal.alarm`, which only
works in the main thread, so they are switched off here and every check instead runs in a worker
process that is killed and replaced when it overruns its per-pair deadline. The same workers vet gold
answers (`AnswerChecker.ungradeable_reasons`), and a gold answer may hold alternatives
(`gold_alternatives`); `gold_answers` normalises what the problem sources write.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sigma_assets.method.answers import FUNCTION_NAMES, plain_number

# ---------------------------------------------------------------------------------------------------------
# Answer equality
# ---------------------------------------------------------------------------------------------------------

_TRAILING_ZERO_RE = re.compile(r"(-?\d+)\.0+")


_CURRENCY_RE = re.compile(r"\\\$|[$€£¥]")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_WORD_ANSWER_RE = re.compile(r"[A-Za-z][A-Za-z\s'-]*[A-Za-z]")
_PLAIN_PI_RE = re.compile(r"(?<![A-Za-z])pi(?![A-Za-z])")


def normalize_answer(s: str) -> str:
    """A cheap canonical form for the string-equality fast path; never used to decide inequality. Money
    signs go (`\\$18` is 18), and an answer that is a word is compared without case (`East`, `east`)."""
    s = _TEXT_RE.sub(r"\1", _CURRENCY_RE.sub("", s)).strip()
    if _WORD_ANSWER_RE.fullmatch(s):
        return " ".join(s.split()).casefold()
    s = plain_number(re.sub(r"\s+", "", s))
    m = _TRAILING_ZERO_RE.fullmatch(s)
    return m.group(1) if m else s


# A normalised gold answer may accept several forms ("C(10, 5), or equivalently 252"): they are stored in
# one string, joined by this phrase, and a prediction is correct when it equals any of them.
GOLD_ALTERNATIVES_JOINER = " or equivalently "


def gold_alternatives(gold: str) -> list[str]:
    """The forms a gold answer accepts: one, or several joined by `GOLD_ALTERNATIVES_JOINER`."""
    parts = [part.strip().rstrip(",").strip() for part in gold.split(GOLD_ALTERNATIVES_JOINER)]
    return [part for part in parts if part] or [gold]


# Why a gold answer cannot grade (`AnswerChecker.ungradeable_reasons`); a detail may follow after ": ".
UNPARSED = "does not parse to a mathematical expression"
NOT_SELF_EQUAL = "does not verify against itself"
PARSE_DROPS = "the parse drops part of the answer"
PARSE_ADDS = "the parse adds symbols the answer does not have"
NO_VERDICT = "the checker gave no verdict in time"

_ENVIRONMENT_RE = re.compile(r"\\(?:begin|end)\{[^}]*\}")
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_LETTER_RUN_RE = re.compile(r"[A-Za-z]+")


def answer_letters(text: str) -> set[str]:
    """The letters an answer names as variables (lower case): LaTeX commands and function names aside."""
    text = _LATEX_COMMAND_RE.sub(" ", _ENVIRONMENT_RE.sub(" ", text))
    runs = (run for run in _LETTER_RUN_RE.findall(text) if run.lower() not in FUNCTION_NAMES)
    return {letter for run in runs for letter in run.lower()}


def _parse_answer(answer: str) -> list[Any]:
    """math-verify parse of a bare answer string. Runs in the worker process."""
    from math_verify import parse

    s = plain_number(_CURRENCY_RE.sub("", answer).strip())  # money signs: `\$1,200` is 1200
    if "\\" not in s:  # a plain-text answer: `12*pi` names the constant, as `12\pi` does
        s = _PLAIN_PI_RE.sub(r"\\pi ", s)
    # math-verify extracts from `$...$` / `\boxed{}` spans; a bare `\frac{1}{2}` is not found at all.
    candidates = [s] if ("$" in s or "\\boxed" in s) else [f"${s}$", s]
    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=None)  # type: ignore[arg-type]
        if parsed:
            return parsed
    return []


def _verify_pair(gold: str, pred: str, gold_cache: dict[str, list[Any]]) -> bool:
    """Gold first: `verify` is asymmetric (e.g. gold `1<x<2` accepts pred `(1,2)`, not the reverse).

    `verify` takes lists and accepts any (gold, pred) combination, so a gold's alternatives are parsed one
    by one and handed over together."""
    from math_verify import verify

    gold_parsed = gold_cache.get(gold)
    if gold_parsed is None:
        gold_parsed = [item for form in gold_alternatives(gold) for item in _parse_answer(form)]
        if len(gold_cache) >= 4096:  # many predictions share one gold; bound the memory anyway
            gold_cache.clear()
        gold_cache[gold] = gold_parsed
    pred_parsed = _parse_answer(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _expression_letters(expr: Any) -> tuple[set[str], set[str]]:
    """(every letter of every name in a parsed expression, its one-letter variable names), lower case."""
    import sympy
    from sympy.core.function import AppliedUndef

    names = {str(s) for s in expr.atoms(sympy.Symbol)} | {type(f).__name__ for f in expr.atoms(AppliedUndef)}
    letters = {c for name in names for c in name.lower() if c.isascii() and c.isalpha()}
    if expr.has(sympy.E) or expr.atoms(sympy.exp):  # `e` reads as Euler's number
        letters.add("e")
    if expr.has(sympy.I):
        letters.add("i")
    return letters, {name.lower() for name in names if len(name) == 1 and name.isascii()}


def _gold_problem(answer: str) -> str | None:
    """Why one gold answer cannot grade, or None. Runs in the worker process."""
    from math_verify import verify

    expr = next((item for item in _parse_answer(answer) if not isinstance(item, str)), None)
    if expr is None or not hasattr(expr, "atoms"):
        return UNPARSED
    # The parsed expression against itself: the string math-verify keeps beside it would always match.
    if not verify(expr, expr, timeout_seconds=None):
        return f"{NOT_SELF_EQUAL}: {expr}"
    # A parse that loses a variable read only part of the answer (`2^floor(n/2)` parses to 2); one that
    # gains a variable misread something (`\cdots` as the symbol s).
    named = answer_letters(answer)
    letters, variables = _expression_letters(expr)
    if named - letters:
        return f"{PARSE_DROPS}: it parses to {expr}, without {', '.join(sorted(named - letters))}"
    if variables - named:
        return f"{PARSE_ADDS}: it parses to {expr}, with {', '.join(sorted(variables - named))}"
    return None


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive a list of (index, gold, pred), answer `(index, verdict)` one by one, in order.

    With a prediction the verdict is whether it equals the gold; without one (None) it is why the gold
    answer cannot grade, or None when it can."""
    # Ctrl-C goes to the whole process group; let the parent decide and shut us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import math_verify.grader
        import math_verify.parser

        # We disable math-verify's signal timeouts on purpose; silence its once-per-process warning.
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass
    gold_cache: dict[str, list[Any]] = {}
    # Warm up the LaTeX parser so the first real pair is not charged for lazy initialisation.
    _verify_pair("1", "\\frac{2}{2}", gold_cache)
    gold_cache.clear()
    conn.send(("ready",))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for index, gold, pred in batch:
            verdict: bool | str | None
            try:
                verdict = _gold_problem(gold) if pred is None else _verify_pair(gold, pred, gold_cache)
            except Exception as exc:  # a parse/verify failure is a wrong answer, not a dead worker
                verdict = False if pred is not None else f"{UNPARSED}: {type(exc).__name__}"
            conn.send((index, verdict))


def _mp_context() -> multiprocessing.context.BaseContext:
    # Never fork: the parent may hold threads/event loops (Dagster, asyncio) that fork would copy broken.
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    deadline: float = 0.0  # when the pair at the head of `queue` (or start-up) must have answered
    queue: deque[tuple[int, str, str | None]] = field(default_factory=deque)


class AnswerChecker:
    """Checks (gold, predicted) answer pairs with math-verify in worker processes, each pair time-bounded.

    A pair that overruns `timeout_s` counts as wrong; its worker is killed and replaced and the remaining
    pairs of the batch continue on the new worker. Results are cached per (gold, pred). Thread-safe.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        workers: int = 1,
        startup_timeout_s: float = 120.0,
        max_cache: int = 200_000,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.timeout_s = timeout_s
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.max_cache = max_cache
        self.checks = 0  # pairs asked about, including cache hits and fast-path answers
        self.worker_checks = 0  # pairs that actually went to math-verify
        self.timeouts = 0  # pairs that overran `timeout_s` (their worker was killed)
        self.crashes = 0  # pairs during which the worker died on its own
        self._cache: dict[tuple[str, str], bool] = {}
        self._workers: list[_Worker | None] = [None] * workers
        self._lock = threading.Lock()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for i, worker in enumerate(self._workers):
                if worker is not None:
                    self._stop(worker, graceful=True)
                    self._workers[i] = None

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers if w is not None and w.proc.pid is not None]

    def _spawn(self) -> _Worker:
        ctx = _mp_context()
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child_conn,), daemon=True, name="answer-checker")
        proc.start()
        child_conn.close()  # so a dead worker shows up as EOF on our end
        return _Worker(proc, parent_conn, deadline=time.monotonic() + self.startup_timeout_s)

    @staticmethod
    def _stop(worker: _Worker, graceful: bool) -> None:
        """End a worker and reap it (join), so no zombie is left behind."""
        if graceful:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
            worker.proc.join(timeout=1.0)
        if worker.proc.is_alive():
            worker.proc.terminate()
            worker.proc.join(timeout=1.0)
        if worker.proc.is_alive():
            worker.proc.kill()
            worker.proc.join()
        worker.conn.close()

    # -- checking --------------------------------------------------------------------------------------

    def check(self, gold: str, pred: str | None) -> bool:
        return self.check_many([(gold, pred)])[0]

    def check_many(self, pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        """Whether each predicted answer equals its gold answer, in input order."""
        with self._lock:
            if self._closed:
                raise RuntimeError("AnswerChecker is closed")
            self.checks += len(pairs)
            results: list[bool | None] = [None] * len(pairs)
            todo: dict[tuple[str, str], list[int]] = {}  # unique uncached pairs -> their positions
            for i, (gold, pred) in enumerate(pairs):
                if not pred or not pred.strip() or not gold or not gold.strip():
                    results[i] = False
                    continue
                key = (gold, pred)
                if key in self._cache:
                    results[i] = self._cache[key]
                elif any(
                    normalize_answer(form) == normalize_answer(pred) for form in gold_alternatives(gold)
                ):
                    results[i] = True
                else:
                    todo.setdefault(key, []).append(i)
            if todo:
                keys = list(todo)
                outcomes = self._run(keys, failed=False)
                for key, ok in zip(keys, outcomes, strict=True):
                    self._remember(key, ok)
                    for i in todo[key]:
                        results[i] = ok
            return [bool(r) for r in results]

    async def acheck_many(self, pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        """`check_many` in a worker thread, so that an event loop goes on sending model calls meanwhile."""
        return await asyncio.to_thread(self.check_many, pairs)

    def ungradeable_reasons(self, answers: Sequence[str]) -> list[str | None]:
        """Why each gold answer cannot grade a prediction, or None where it can, in input order.

        A gradeable answer parses to a mathematical expression (not only a string), verifies against
        itself, and its parse keeps every variable the text names and adds none. Each answer is one form
        (split alternatives first); each is bounded by `timeout_s` like every other check."""
        with self._lock:
            if self._closed:
                raise RuntimeError("AnswerChecker is closed")
            self.checks += len(answers)
            if not answers:
                return []
            return self._run([(answer, None) for answer in answers], failed=NO_VERDICT)

    def _remember(self, key: tuple[str, str], ok: bool) -> None:
        if len(self._cache) >= self.max_cache:
            self._cache.pop(next(iter(self._cache)))  # oldest first: dicts keep insertion order
        self._cache[key] = ok

    def _run(self, keys: list[tuple[str, str | None]], failed: Any) -> list[Any]:
        """Send contiguous chunks of `keys` to the workers, one message each, and collect pair-by-pair;
        a pair that overruns its deadline or kills its worker gets `failed`."""
        self.worker_checks += len(keys)
        outcomes: list[Any] = [failed] * len(keys)
        n_used = min(self.workers, len(keys))
        chunk = -(-len(keys) // n_used)
        try:
            for w in range(n_used):
                items = [
                    (i, keys[i][0], keys[i][1]) for i in range(w * chunk, min(len(keys), (w + 1) * chunk))
                ]
                worker = self._workers[w]
                if worker is None or not worker.proc.is_alive():
                    if worker is not None:
                        self._stop(worker, graceful=False)
                    worker = self._workers[w] = self._spawn()
                worker.queue.extend(items)
                if worker.ready:
                    self._send_queue(w)
            self._collect(outcomes, failed)
        except BaseException:
            # Leave no worker holding a half-done batch (e.g. KeyboardInterrupt): the next call starts clean.
            for w, worker in enumerate(self._workers):
                if worker is not None and worker.queue:
                    self._stop(worker, graceful=False)
                    self._workers[w] = None
            raise
        return outcomes

    def _send_queue(self, w: int) -> None:
        worker = self._workers[w]
        assert worker is not None
        try:
            worker.conn.send(list(worker.queue))
        except (OSError, ValueError):
            # It died while idle, so no pair is to blame: hand the whole queue to a fresh worker.
            self._stop(worker, graceful=False)
            fresh = self._spawn()
            fresh.queue = worker.queue
            self._workers[w] = fresh
            return
        worker.deadline = time.monotonic() + self.timeout_s

    def _collect(self, outcomes: list[Any], failed: Any) -> None:
        while True:
            busy = [(w, wk) for w, wk in enumerate(self._workers) if wk is not None and wk.queue]
            if not busy:
                return
            wait_s = max(0.0, min(wk.deadline for _, wk in busy) - time.monotonic())
            ready = set(wait([wk.conn for _, wk in busy], timeout=wait_s))
            for w, worker in busy:
                if worker.conn in ready:
                    self._drain(w, outcomes, failed)
            now = time.monotonic()
            for w, worker in busy:
                current = self._workers[w]
                if current is not worker or not worker.queue or worker.deadline > now:
                    continue
                if worker.conn.poll(0):  # answered just in time; picked up on the next pass
                    continue
                if not worker.ready:
                    raise RuntimeError(
                        f"answer-checker worker did not start within {self.startup_timeout_s}s"
                    )
                self.timeouts += 1
                self._replace(w, outcomes, failed)

    def _drain(self, w: int, outcomes: list[Any], failed: Any) -> None:
        worker = self._workers[w]
        assert worker is not None
        while worker.queue:
            try:
                if not worker.conn.poll(0):
                    return
                msg = worker.conn.recv()
            except (EOFError, OSError):
                if not worker.ready:
                    raise RuntimeError(
                        "answer-checker worker died during start-up (workers are spawned: a script that runs "
                        "pipeline code at import time needs an `if __name__ == '__main__':` guard)"
                    ) from None
                self.crashes += 1
                self._replace(w, outcomes, failed)
                return
            if msg == ("ready",):
                worker.ready = True
                self._send_queue(w)
                if self._workers[w] is not worker:  # the send failed and a fresh worker took over
                    return
                continue
            index, verdict = msg
            head = worker.queue.popleft()
            assert head[0] == index, "worker answered out of order"
            outcomes[index] = verdict
            worker.deadline = time.monotonic() + self.timeout_s  # the next pair's clock starts now

    def _replace(self, w: int, outcomes: list[Any], failed: Any) -> None:
        """Kill the worker stuck on its head pair, fail that pair, and resume the rest on a fresh worker."""
        worker = self._workers[w]
        assert worker is not None
        self._stop(worker, graceful=False)
        index = worker.queue.popleft()[0]
        outcomes[index] = failed
        rest = worker.queue
        self._workers[w] = None
        if rest:
            fresh = self._spawn()
            fresh.queue = rest
            self._workers[w] = fresh  # sends `rest` once it reports ready


_default_checker: AnswerChecker | None = None
_default_lock = threading.Lock()


def _close_default_checker() -> None:
    if _default_checker is not None:
        _default_checker.close()


def default_checker() -> AnswerChecker:
    """The shared module-level checker, started on first use and closed at interpreter exit."""
    global _default_checker
    with _default_lock:
        if _default_checker is None:
            _default_checker = AnswerChecker()
            atexit.register(_close_default_checker)
        return _default_checker


def answers_match(gold: str, pred: str | None, checker: AnswerChecker | None = None) -> bool:
    """Whether `pred` is mathematically equal to `gold` (gold first: math-verify is asymmetric)."""
    return (checker or default_checker()).check(gold, pred)
