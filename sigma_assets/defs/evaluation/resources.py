"""The evaluation resource: which benchmark files, and what decodes."""

import dagster as dg

from sigma_assets.evaluation import scoring
from sigma_assets.method.grading import AnswerChecker


class EvaluationResource(dg.ConfigurableResource):
    """SIGMA_EVAL_SETS (`name=path,...`: MATH, GSM8K or plain problem/answer jsonl/parquet files) and the
    backend that decodes: `transformers` (in process), `vllm` (in-process engine) or `openai` (a
    server that serves each model under its folder path, as `vllm serve <folder>` does)."""

    eval_sets: str = ""
    backend: str = "transformers"
    base_url: str | None = None
    max_batch: int = 32
    # Requests in flight at once: a server batches what it has, so send the whole set in one stream.
    concurrency: int = 256

    def sets(self, checker: AnswerChecker, storage_options: dict) -> list[scoring.EvalSet]:
        try:
            pairs = scoring.parse_eval_sets(self.eval_sets)
            return [scoring.load_eval_set(n, p, checker, storage_options) for n, p in pairs]
        except scoring.EvalSetError as exc:
            raise dg.Failure(str(exc)) from exc
