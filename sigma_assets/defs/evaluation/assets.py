"""eval_scores: the untuned base model and both fine-tuned variants on every benchmark, greedy and sampled."""

import time
from contextlib import ExitStack
from dataclasses import asdict

import dagster as dg
import polars as pl

from sigma_assets.defs.evaluation.resources import EvaluationResource
from sigma_assets.defs.shared.k8s import k8s_op_tags
from sigma_assets.defs.shared.resources import StorageResource
from sigma_assets.defs.training.assets import VARIANTS, finetuned_model, read_heldout
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.evaluation import scoring
from sigma_assets.evaluation.completions import read_stored, write_completions
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.models import build_backend
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.settings import BUNDLED_SMOLLM2
from sigma_assets.training import sft_data
from sigma_assets.training.charts import grouped_bars_png, markdown_image
from sigma_assets.training.model_files import local_model_dir, training_run


class EvalConfig(dg.Config):
    """Greedy decoding budget; `samples: k` adds k sampled answers per problem (pass@1 with its standard
    error, maj@k, pass@k); the bundled unseen set is used when SIGMA_EVAL_SETS is empty."""

    max_tokens: int = 256
    samples: int = 0
    sample_temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    bundled_problems: int = 8
    answer_timeout_s: float = 5.0


_SMALL_EVAL_TOKENS = 48  # the bundled 135M model: short arithmetic answers, minutes not hours on CPU


@dg.asset(
    op_tags=k8s_op_tags("eval_scores"),
    group_name="evaluation",
    pool="gpu",  # loads each model for generation: shares the accelerator with finetuned_model
    deps=[finetuned_model],
    ins={
        "raw_problems": dg.AssetIn(
            partition_mapping=dg.AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        ),
        # Both variants' data sets, to say what the ablation compared.
        "sft_dataset": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
    kinds={"polars", "parquet"},
    description="Accuracy per (model, benchmark): the base model and the sigma / mcts fine-tunes.",
)
def eval_scores(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    raw_problems: dict[str, pl.DataFrame],
    sft_dataset: dict[str, pl.DataFrame],
    storage: StorageResource,
    training: TrainingResource,
    evaluation: EvaluationResource,
) -> pl.DataFrame:
    root = storage.root()
    comparison = sft_data.compare_variants(sft_dataset["sigma"], sft_dataset["mcts"])
    notes = [comparison.note]
    max_tokens = config.max_tokens
    if training.base_model == BUNDLED_SMOLLM2 and config.max_tokens == EvalConfig().max_tokens:
        max_tokens = _SMALL_EVAL_TOKENS
    with AnswerChecker(timeout_s=config.answer_timeout_s) as checker:
        sets = evaluation.sets(checker, root.storage_options)
        # Problems neither variant trained on; with no benchmark files, also a bundled unseen set.
        heldout = [read_heldout(root, v) for v in VARIANTS.get_partition_keys()]
        common = set.intersection(*(set(h["problem_id"]) for h in heldout))
        heldout_problems = tuple(
            scoring.EvalProblem(r["problem_id"], r["problem"], r["answer"])
            for r in heldout[0].filter(pl.col("problem_id").is_in(common)).iter_rows(named=True)
        )
        if heldout_problems:
            sets.insert(0, scoring.EvalSet(scoring.HELDOUT_BENCHMARK, heldout_problems, source="sft_dataset"))
        else:  # sft_dataset held nothing out (a slice under its min_heldout_problems trains instead)
            notes.append("heldout: not scored, sft_dataset held no problem out (see its heldout_note)")
        if not evaluation.eval_sets:
            seen = [t for frame in raw_problems.values() for t in frame["problem"].to_list()]
            sets.append(scoring.bundled_eval_set(config.bundled_problems, exclude_texts=seen))

        decoding = scoring.Decoding(
            max_tokens, config.samples, config.sample_temperature, config.top_p, config.seed
        )
        scored: list[scoring.ScoredAnswer] = []
        evaluated, throughput, kept = {}, {}, {}
        for model in scoring.MODELS:
            with ExitStack() as stack:
                if model == "base":
                    folder, fingerprint = training.base_model_dir(), training.base_model
                else:
                    folder = str(stack.enter_context(local_model_dir(root, model)))
                    fingerprint = training_run(folder)["training_run"]
                backend = build_backend(
                    evaluation.backend, folder, base_url=evaluation.base_url, max_batch=evaluation.max_batch
                )
                store = ResponseStore(root.path(), f"eval/{model}/{_safe(fingerprint)}").load()
                client = stack.enter_context(LLMClient(backend, store, evaluation.concurrency))
                stored = read_stored(root, model, fingerprint, decoding, sets)
                timed = _Timed(client.generate)
                context.log.info(
                    f"evaluating {model} ({folder}) on {sum(len(s.problems) for s in sets)} problems, "
                    f"{len(stored)} completions stored"
                )
                answers, generated = scoring.evaluate(
                    model, timed, sets, checker.check_many, decoding, stored=stored
                )
                kept[model] = write_completions(root, model, fingerprint, decoding, answers)
                scored += answers
                evaluated[model] = folder
                throughput[model] = {
                    "requests_generated": generated,
                    "completions_reused": len(stored),
                    "seconds": round(timed.seconds, 3),
                    "requests_per_s": round(generated / timed.seconds, 3) if timed.seconds else None,
                }
    table = scoring.accuracy_table(scored)
    deltas = scoring.ablation_deltas(table)
    # Sampled pass@1 with its standard error where there are samples, else greedy accuracy.
    sampled = config.samples > 0
    metric = "pass@1" if sampled else "accuracy"
    bars, errors = {}, {}
    for b in dict.fromkeys(table["benchmark"].to_list()):
        rows = list(table.filter(pl.col("benchmark") == b).iter_rows(named=True))
        bars[b] = {r["model"]: 100 * r[metric] for r in rows}
        errors[b] = {r["model"]: 100 * r["pass@1_se"] for r in rows} if sampled else {}
    wrong = [s for s in scored if not s.correct][:6]
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "accuracy_table": dg.MetadataValue.md(f"```\n{scoring.format_table(table, notes)}\n```"),
            "ablation_delta_points": dg.MetadataValue.json(deltas),
            # What sigma and mcts were trained on: equal data sets make any difference a non-result.
            "ablation": dg.MetadataValue.json(
                {
                    "sigma_equals_mcts": comparison.identical,
                    "sigma_samples": comparison.sigma_samples,
                    "mcts_samples": comparison.mcts_samples,
                    "shared_samples": comparison.shared,
                    "note": comparison.note,
                }
            ),
            "notes": dg.MetadataValue.json(notes),
            "accuracy_chart": dg.MetadataValue.md(
                markdown_image(
                    grouped_bars_png(
                        bars,
                        f"pass@1 over {config.samples} samples (± 1 s.e.)" if sampled else "greedy accuracy",
                        f"{metric} (%)",
                        errors=errors,
                    ),
                    "accuracy",
                )
            ),
            "decoding": dg.MetadataValue.json(asdict(decoding)),
            "throughput": dg.MetadataValue.json(throughput),
            "completions": dg.MetadataValue.json(kept),
            "benchmarks": dg.MetadataValue.json(
                {
                    s.name: {
                        "problems": len(s.problems),
                        "skipped_gold": len(s.skipped),
                        "layout": s.layout,
                        "source": s.source,
                    }
                    for s in sets
                }
            ),
            "models": dg.MetadataValue.json(evaluated),
            "max_tokens": max_tokens,
            "wrong_examples": dg.MetadataValue.json(
                [
                    {"model": s.model, "problem": s.problem_id, "gold": s.gold, "prediction": s.prediction}
                    for s in wrong
                ]
            ),
        }
    )
    return table


class _Timed:
    """A `generate` that adds up the seconds it spends."""

    def __init__(self, generate):
        self.generate = generate
        self.seconds = 0.0

    def __call__(self, requests):
        started = time.perf_counter()
        try:
            return self.generate(requests)
        finally:
            self.seconds += time.perf_counter() - started


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-80:]


@dg.asset_check(
    asset=eval_scores,
    description="A fine-tuned model that scores below its untuned base on a benchmark is a warning.",
)
def finetuned_not_below_base(eval_scores: pl.DataFrame) -> dg.AssetCheckResult:
    accuracy = {(r["model"], r["benchmark"]): r["accuracy"] for r in eval_scores.iter_rows(named=True)}
    base = {b: a for (m, b), a in accuracy.items() if m == "base"}
    below = [
        f"{model} on {benchmark}: {value:.3f} < base {base[benchmark]:.3f}"
        for (model, benchmark), value in accuracy.items()
        if model != "base" and benchmark in base and value < base[benchmark]
    ]
    return dg.AssetCheckResult(
        passed=not below,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"below_base": dg.MetadataValue.json(below)},
    )
