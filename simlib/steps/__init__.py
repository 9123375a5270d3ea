"""The pipeline's cached steps, each a function of the Config.

Every step writes its artefact under ``<work_dir>/`` keyed by a hash of exactly the inputs it
depends on (config subset, upstream artefacts, the code that computes it), so a notebook can call
the steps it needs in any order, alone under papermill or in ``simlib run``, and a step runs only
when one of its inputs changed.
"""
from simlib.steps.data import real_responses, test_posts
from simlib.steps.generation import (endpoint_model, openai_endpoint, style_kwargs, synthetic_responses,
                                     synthetic_t1, t1_sizes)
from simlib.steps.grpo import (eval_seed, grpo_runs, policy_evaluation, policy_prompts, reference_agreement,
                               reward_design, reward_evaluations, reward_targets, target_table, train_spec)
from simlib.steps.scoring import (JUDGE_CHARS, embeddings, equal_tokens, hidden_features, judge_labels,
                                  judge_validation_items, logprob_scores, own_samples, own_t1, reply_quality)

__all__ = ["real_responses", "test_posts", "endpoint_model", "openai_endpoint", "style_kwargs",
           "synthetic_responses", "synthetic_t1", "t1_sizes", "eval_seed", "grpo_runs", "policy_evaluation",
           "policy_prompts", "reward_design", "reward_evaluations", "reward_targets", "train_spec",
           "reference_agreement", "target_table", "JUDGE_CHARS",
           "embeddings", "equal_tokens", "hidden_features", "judge_labels", "judge_validation_items",
           "logprob_scores", "own_samples", "own_t1", "reply_quality"]
