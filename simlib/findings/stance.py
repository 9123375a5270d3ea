"""AITA verdicts where the run's posts ask for them: the scope, and the sentences the chapters write.

Verdicts (NTA, YTA, ...) exist only on posts that ask readers to judge the poster
(:func:`simlib.measures.aita.verdict_posts`). The verdict shares, verdict entropy, the judge's
validation against stated verdicts and its stance labels therefore read only those posts; on a run
without any (r/AskReddit alone) each is skipped, and the chapter says so in a sentence chosen here
by the data, never in prose written for AITA.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from simlib.measures.aita import verdict_posts

__all__ = ["VerdictScope", "scope", "names", "verdict_reading", "judge_reading", "judge_use", "judge_summary",
           "judge_figure_note", "humanlike_note", "reply_range", "remedy_verdict_measures"]


@dataclass(frozen=True)
class VerdictScope:
    """Which posts of a run ask for a verdict: ``ids`` of those, ``n_posts`` in all, and the
    subreddits (as Reddit spells them) ``with_verdicts`` (at least one such post) and ``without``."""

    ids: tuple[str, ...]
    n_posts: int
    with_verdicts: tuple[str, ...]
    without: tuple[str, ...]

    @property
    def applies(self) -> bool:
        return bool(self.ids)

    @property
    def n(self) -> int:
        return len(self.ids)


def scope(posts: pd.DataFrame) -> VerdictScope:
    """The :class:`VerdictScope` of ``posts`` (post_id, title, subreddit)."""
    ids = verdict_posts(posts)
    asks = posts["post_id"].astype(str).isin(ids)
    subs = list(dict.fromkeys(posts["subreddit"].astype(str)))
    has = set(posts.loc[asks, "subreddit"].astype(str))
    return VerdictScope(tuple(ids), len(posts), tuple(s for s in subs if s in has), tuple(s for s in subs if s not in has))


def names(subreddits) -> str:
    """``r/A``, ``r/A and r/B``, ``r/A, r/B and r/C``.

    >>> names(["AITAH", "AskReddit"])
    'r/AITAH and r/AskReddit'
    """
    subs = [f"r/{s}" for s in subreddits]
    return subs[0] if len(subs) == 1 else ", ".join(subs[:-1]) + " and " + subs[-1] if subs else "no subreddit"


def _none_reason(sc: VerdictScope) -> str:
    # why a run has no verdicts: its subreddits' posts ask no one to judge the poster
    whose = "its" if len(sc.without) <= 1 else "their"
    posts = f"{sc.n_posts} post asks" if sc.n_posts == 1 else f"{sc.n_posts} posts ask"
    return f"{whose} {posts} no one to judge the poster, so no reply states a verdict"


def _subs(sc: VerdictScope) -> str:
    return names(sc.without) if sc.without else "this run"


def _has(sc: VerdictScope) -> str:
    # "r/AskReddit has", "r/A and r/B have"
    return f"{_subs(sc)} {'have' if len(sc.without) > 1 else 'has'}"


def _only(sc: VerdictScope) -> str:
    # the restriction a mixed run states: verdicts are read on the posts that ask for them only
    if sc.n == sc.n_posts:
        return ""
    return (f" They are read only on the {sc.n} of {sc.n_posts} posts that ask for one ({names(sc.with_verdicts)}); "
            f"posts of {names(sc.without)} ask for none." if sc.without else
            f" They are read only on the {sc.n} of {sc.n_posts} posts that ask for one.")


def _num(x: float, spec: str) -> str:
    # an undefined statistic (no verdicts, one label only) reads as "n/a", not "nan"
    return "n/a" if x != x else format(x, spec)


def verdict_reading(table: pd.DataFrame, sc: VerdictScope) -> str:
    """The paragraph after the verdict chart: entropy and no-verdict shares per source, or why
    there is no chart. ``table``: :func:`simlib.findings.gap.verdict_table` of the verdict posts."""
    if sc.applies and table.empty:
        return (f"No reply to the {sc.n} posts that ask for a verdict reached the comparison, so there are no verdict "
                "shares to show.")
    if not sc.applies:
        return (f"{_has(sc)} no verdicts to count: {_none_reason(sc)}, and the verdict "
                "shares and their entropy are left out of this chapter.")
    ent = {s: _num(float(table.loc[s, "entropy_bits"]), ".2f") if s in table.index else "n/a"
           for s in ("real", "plain", "humanlike")}
    none = {s: f"{float(table.loc[s].get('none', 0.0)) * 100:.0f}" if s in table.index else "n/a"
            for s in ("real", "plain", "humanlike")}
    return ("Verdicts are parsed from the reply text by a rule (an acronym or its spelled-out form; the first one "
            f"wins).{_only(sc)} Among replies that state a verdict, the entropy of the verdict distribution is "
            f"{ent['real']} bits for real replies, {ent['plain']} for plain and {ent['humanlike']} for humanlike "
            f"(n/a: no reply of that source states a verdict); {none['plain']}% of plain replies and "
            f"{none['humanlike']}% of humanlike replies state none, against {none['real']}% of real ones.")


def judge_reading(val: dict, sc: VerdictScope, valid: bool) -> str:
    """The judge's validation against verdicts stated in real replies, in words, or why there is none."""
    if not sc.applies:
        return (f"{_has(sc)} no verdicts to validate the judge against: "
                f"{_none_reason(sc)}. The judge is therefore neither validated nor used in this run.")
    rule = ("The rule, fixed before this validation: the judge labels the other sources' replies only if the lower "
            "end of the 95% interval of its kappa is above 0. ")
    if not val["n"]:
        return (f"{rule}No real reply to the {sc.n} posts that ask for a verdict states one, so there is nothing to "
                "validate the judge against (more posts, n_posts, would give some); the judge labels nothing here.")
    pct = lambda k: _num(val[k] * 100, ".0f")  # noqa: E731
    kap = lambda k: _num(val[k], ".2f")  # noqa: E731
    return (f"{rule}Real replies that state a verdict are free ground truth. On {val['n']} of them (from {val['n_posts']} "
            f"posts), with the verdict masked, the judge's stance matches the stated verdict {pct('accuracy')}% of "
            f"the time (95% CI {pct('acc_lo')}–{pct('acc_hi')}%, bootstrap over posts); always answering the most "
            f"common verdict, {val.get('majority_label', 'n/a')}, would score {pct('majority')}%. Cohen's kappa is "
            f"{kap('kappa')} (95% CI {kap('kappa_lo')} to {kap('kappa_hi')}): the judge "
            f"{'reads' if valid else 'does not read'} stance beyond chance.{_judged_on(sc)}")


def _judged_on(sc: VerdictScope) -> str:
    # a mixed run: the judge is validated on the verdict posts only
    if sc.n == sc.n_posts:
        return ""
    others = f" ({names(sc.without)} asks for none)" if sc.without else ""
    return f" It is validated on the {sc.n} of {sc.n_posts} posts that ask for a verdict{others}."


def judge_use(valid: bool, sc: VerdictScope) -> str:
    """What the judge does next, by the rule fixed before its validation."""
    if not sc.applies:
        return "The judge labels no reply, so this chapter makes no claim about stance or register."
    if valid:
        return ("The judge reads stance beyond chance, so its stance labels of every reply to the test posts that ask "
                "for a verdict follow; the register labels (mock, vent, analysis, advice, support) have no ground "
                "truth in this data and are not validated, so they are shown as what the judge says, not as a finding.")
    return ("The judge does not read stance beyond chance, so it labels nothing else here: its stance labels would "
            "describe the judge, not the replies. The register taxonomy (mock, vent, analysis, advice, support) has "
            "no ground truth in this data at all, so this chapter makes no claim about registers.")


def judge_figure_note(val: dict) -> str:
    """The sentence under the judge's confusion matrix, or why there is none."""
    if val["n"]:
        return "A judge that reads stance puts most replies on the diagonal."
    return "There is no confusion matrix: no real reply of this run states a verdict to hold the judge's stance against."


def judge_summary(val: dict, sc: VerdictScope, valid: bool) -> str:
    """The judge's clause of the chapter's closing paragraph."""
    if not sc.applies:
        return f"With no verdicts on {_subs(sc)}, the judge was neither validated nor used."
    reads = "reads" if valid else "does not read"
    return f"The judge {reads} stance beyond chance (kappa {_num(val['kappa'], '.2f')}), and its register labels are not validated."


def humanlike_note(sc: VerdictScope) -> str:
    """How the ``humanlike`` prompt treats this run's posts (it asks for a verdict on AITA posts only)."""
    if not sc.applies:
        return "none of this run's posts asks readers to judge the poster, so it asks for no verdict"
    if sc.n == sc.n_posts:
        return "opening with a verdict (NTA, YTA, ESH, NAH, INFO), as every post of this run asks readers to judge the poster"
    return (f"opening with a verdict (NTA, YTA, ESH, NAH, INFO) on the {sc.n} of {sc.n_posts} posts that ask readers "
            "to judge the poster")


def reply_range(sc: VerdictScope) -> str:
    """What short and long replies are, in the data chapter's sentence on reply lengths."""
    if sc.applies:
        return "bare verdicts sit beside paragraph-long stories"
    return "one-line answers sit beside paragraph-long stories"


def remedy_verdict_measures(sc: VerdictScope) -> str:
    """The remedy chapter's clause on the verdict measures: which posts they read, or why they are absent."""
    if not sc.applies:
        return f"the AITA verdict measures are left out, as no post of {_subs(sc)} asks for a verdict"
    where = "" if sc.n == sc.n_posts else f", on the {sc.n} posts that ask for one"
    return ("the AITA verdicts are measured too (their entropy per post and over all replies, and how often no "
            f"verdict is given at all{where})")
