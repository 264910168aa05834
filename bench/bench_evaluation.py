"""Evaluation throughput: greedy answers to the same problems, batched through the LLM client
against one request at a time, same model, same budget, same run.

    python bench/bench_evaluation.py [--model smollm2-135m-instruct] [--problems 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import time

from sigma_assets.evaluation import scoring
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.models import build_backend
from sigma_assets.method.grading import AnswerChecker


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    eval_set = scoring.bundled_eval_set(args.problems)
    requests = scoring.eval_requests(eval_set.problems, scoring.Decoding(max_tokens=args.max_tokens))
    timings, texts = {}, {}
    # No response store: both sides generate every answer.
    with LLMClient(build_backend("transformers", args.model, max_batch=args.problems)) as client:
        client.generate(requests[:1])  # load the model outside the timings
        t0 = time.perf_counter()
        texts["one by one"] = [client.generate([r])[0][0].text for r in requests]
        timings["one by one"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        texts["batched"] = [s[0].text for s in client.generate(requests)]
        timings["batched"] = time.perf_counter() - t0
    with AnswerChecker() as checker:
        for name, completions in texts.items():
            scored = scoring.score_completions(name, eval_set, completions, checker.check_many)
            rate = len(requests) / timings[name]
            correct = sum(s.correct for s in scored)
            print(f"{name:>10}: {timings[name]:6.1f} s, {rate:.3f} problems/s, {correct} correct")
    same = sum(a == b for a, b in zip(texts["one by one"], texts["batched"], strict=True))
    print(f"model {args.model}, {len(requests)} problems, {args.max_tokens} new tokens at most")
    print(f"identical greedy answers: {same}/{len(requests)} (left padding in a batch may change a few)")
    print(f"speed-up batched / one by one: {timings['one by one'] / timings['batched']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
