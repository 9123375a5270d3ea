"""The dataset card (``README.md``) of ``simlib export``: the Hugging Face hub's card layout, a YAML
header naming the two parquet tables, then fields, sources, licence, generation and quality."""
from __future__ import annotations

import yaml

from simlib.config import Config

SOURCE = ("https://github.com/JianLoong/reddit-crawler", "281d615f814818047328b52a0ae8c36acbd08373")


def header(replies: dict, posts: dict) -> str:
    meta = {
        "configs": [{"config_name": "replies", "data_files": "replies.parquet", "default": True},
                    {"config_name": "posts", "data_files": "posts.parquet"}],
        "language": ["en"], "license": "other", "pretty_name": "simlib run: real and synthetic Reddit replies",
        "task_categories": ["text-generation"], "size_categories": ["n<1K" if replies["replies"] < 1000 else "1K<n<10K"
                                                                     if replies["replies"] < 10000 else "10K<n<100K"],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def fields(features: dict, post_features: dict) -> str:
    rows = [f"| `{c}` | {t} | {m} |" for c, (t, m) in features.items()]
    posts = ", ".join(f"`{c}` ({t})" for c, t in post_features.items())
    return ("| field | type | meaning |\n| --- | --- | --- |\n" + "\n".join(rows)
            + f"\n\nThe `posts` table: {posts}; `split` is the chronological split of the run (train, val, test).\n")


def generation(cfg: Config) -> str:
    where = f"the OpenAI-compatible endpoint {cfg.api_base_url}" if cfg.api_base_url else \
        f"a llama.cpp server on the machine that ran it (`local_server: {cfg.local_server}`)"
    return (f"Synthetic replies were written by `{cfg.generator}` through {where}: {cfg.n_samples} replies per post "
            f"and style for the styles {', '.join(cfg.styles)} (and, where the remedy chapter ran, "
            f"{', '.join(cfg.remedy_styles)}), temperature {cfg.temperature}, top-p {cfg.top_p}, at most "
            f"{cfg.max_tokens} new tokens, posts cut to {cfg.max_post_chars} characters in the prompt, seed {cfg.seed}. "
            "Each prompt style's wording is in `simlib/generate/prompts.py` at the commit above. Every reply the run's "
            "generation store holds is here, including those of chapters other than the gap chapter (e.g. "
            "temperature-1.0 controls); `temperature` and `style` tell them apart.\n")


def quality(counts: dict, cfg: Config) -> str:
    if not counts["scored"]:
        return "No quality measures: the export was made without them (`--no-quality`).\n"
    rates = "; ".join(f"{s}: {100 * r:.0f}% pass" for s, r in counts["passing"].items())
    return (f"{counts['scored']} of the {counts['replies']} replies carry the gap chapter's quality measures: those "
            f"it compared ({cfg.n_per_group} per post and source). `relevance` is the cosine between "
            f"reply and post embeddings under `{cfg.encoder}`; `fluency` the mean token log-prob under `{cfg.scorer}` "
            f"(a model that wrote none of the replies); the gate passes replies above thresholds calibrated on the real "
            f"replies. Among scored replies, {rates}. The book's gap chapter measures how far the synthetic replies' "
            f"diversity, stance and quality differ from the real ones; read them as a study's material.\n")


def origin(cfg: Config, report: dict) -> str:
    kept = (f"read by simlib with its filters (load-more stubs, deleted and removed replies, bots, moderator posts, "
            f"replies shorter than {cfg.min_chars} characters; posts with at least {cfg.min_responses} replies left, the "
            f"earliest {cfg.max_responses} kept)")
    terms = ("The text is Reddit users' content under Reddit's user agreement. Treat it as research data: **do not "
             "redistribute** this dataset or push it to a public hub.")
    if report.get("source") == "dumps":
        files = ", ".join(f"`{d}`" for pair in report.get("dumps", []) for d in pair)
        return (f"Posts and real replies are Reddit users' public posts and comments from the Pushshift/Arctic-Shift "
                f"dump files given to the run ({files}), {kept}. {terms}\n")
    return (f"Posts and real replies are Reddit users' public posts and top-level comments, saved by the third-party "
            f"crawler [{SOURCE[0]}]({SOURCE[0]}) (commit `{SOURCE[1][:8]}`) from reddit.com's public `.json` endpoints "
            f"between July 2023 and January 2024 (\"hot\" listings), and {kept}. The crawler's code is MIT-licensed "
            f"(Copyright (c) 2023 Jian Liew). {terms} The crawl keeps no authors and only top-level comments; its "
            "scores are stored modulo 256, so this dataset omits them.\n")


def card(cfg: Config, counts: dict, report: dict, features: dict, post_features: dict, prov: dict) -> str:
    subs = ", ".join(f"r/{s}" for s in report.get("subreddits", cfg.subreddits))
    return header(counts, post_features) + f"""
# simlib run `{prov['profile']}`: real and synthetic Reddit replies

{counts['replies']} replies to {counts['posts']} posts from {subs}: {counts['real']} real replies by Reddit users and
{counts['synthetic']} synthetic replies that a language model wrote to posts of the same run. Written by `simlib export`
from the run of the `{prov['profile']}` profile (params `{prov['params']}`, commit `{prov['commit']}`, data registry
`{prov['data']}`, exported {prov['date']}), the companion code to the study "Is synthetic data good enough to train
user simulators?".

```python
from datasets import load_dataset
replies = load_dataset("parquet", data_files="replies.parquet", split="train")  # or load_dataset("<this folder>")
posts = load_dataset("parquet", data_files="posts.parquet", split="train")
```

## Fields
{fields(features, post_features)}
## Sources, licence and origin of the Reddit text
{origin(cfg, report)}
## How the synthetic replies were generated
{generation(cfg)}
## What is known of their quality
{quality(counts, cfg)}"""
