"""report.md: the page a person reads after a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from credit_fl.consent_results import consent_lines
from credit_fl.explanation_report import explanation_lines
from privacy.randomness import NO_GUARANTEE

if TYPE_CHECKING:
    import pandas as pd

METRIC_LABELS = (("auc", "AUC"), ("ks", "KS"), ("gini", "Gini"), ("brier", "Brier score"),
                 ("log_loss", "Log-loss"), ("ece", "Calibration error (ECE)"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _rare_label_section(rare: dict[str, Any], label: str) -> list[str]:
    """Render what fraud teams read next to AUC, for a label under 5% positive (test rows)."""
    rows = [["average precision (PR-AUC)", f"{rare['average_precision']:.4f}",
             f"{rare['positive_rate']:.4f} (a random ranking)"]]
    rows += [[f"recall at {float(r):.0%} false positives", f"{v:.4f}", ""]
             for r, v in rare["recall_at_fpr"].items()]
    rows += [[f"share of `{label}` in the riskiest {float(r):.0%}", f"{v:.4f}", f"{float(r):.2f}"]
             for r, v in rare["caught_in_riskiest"].items()]
    lines = ["", f"## Rare label: `{label}` as fraud teams measure it", "",
             *_table(["metric (test)", "value", "chance"], rows)]
    kinds = rare.get("by_fraud_type")
    if kinds:
        parties = sorted({p for k in kinds.values() for p in k.get("without", {})})
        lines += ["", "By fraud scheme (the generator's `fraud_type`): the share of each "
                  "scheme's test frauds among the riskiest 5% of applicants"
                  + (", and without each party's embeddings (which party catches which "
                     "scheme):" if parties else ":"), ""]
        lines += _table(["scheme", "test frauds", "caught"] + [f"without {p}" for p in parties],
                        [[kind, str(v["frauds"]), f"{v['caught_in_riskiest_5']:.2f}"]
                         + [f"{v.get('without', {}).get(p, float('nan')):.2f}"
                            for p in parties] for kind, v in kinds.items()])
    return lines


def render_report(results: dict[str, Any],
                  explained: tuple[dict[str, Any], pd.DataFrame] | None = None) -> str:
    """Markdown summary of one run's results.json.

    ``explained``: the run's test rows scored with reasons (``scoring.json`` and its scores,
    :mod:`experiments.run_explanation`): the section "Why applicants were scored as they were".

    >>> r = {"mode": "local", "role": "baseline", "seed": 0, "dataset": {"name": "d",
    ...      "label": "y", "rows": {"train": 8, "val": 1, "test": 1}, "parties": {},
    ...      "oracle_test_auc": None, "positive_rate": {"test": 0.5}},
    ...      "model": {"kind": "mlp", "parameters": 9},
    ...      "metrics": {"test": {"auc": 0.7, "psi": 0.0}, "val": {"auc": 0.6}, "best_epoch": 1},
    ...      "privacy": None, "timing": {"wall_s": 1.0, "train_s": 0.5}}
    >>> "| AUC | 0.7000 | 0.6000 |" in render_report(r)
    True
    """
    ds, m = results["dataset"], results["metrics"]
    lines = _metrics_lines(results)
    if "rare_label" in m["test"]:
        lines += _rare_label_section(m["test"]["rare_label"], ds["label"])
    if results.get("references"):
        lines += _references_section(results["references"], m["test"]["auc"],
                                     private=results.get("privacy") is not None)
    if "pooled_lender_auc" in m:
        lines += ["", f"Pooled AUC from the lenders' own score summaries (no row-level label "
                  f"leaves a lender): {m['pooled_lender_auc']:.4f}."]
    if ds.get("oracle_test_auc") is not None:
        gap = ds["oracle_test_auc"] - m["test"]["auc"]
        lines += ["", f"Oracle AUC (the generator's true probabilities, test rows): "
                  f"{ds['oracle_test_auc']:.4f}; this model is {gap:.4f} below it."]
    if "consent" in ds:
        lines += consent_lines(ds["consent"])
    lines += _parties_lines(results)
    if results.get("scorecard"):
        lines += _scorecard_section(results["scorecard"])
    lines += _privacy_section(results["privacy"])
    if results.get("audit"):
        lines += _audit_section(results["audit"])
        if results["audit"].get("inversion"):
            lines += _inversion_section(results["audit"]["inversion"], m["test"]["auc"])
    if explained is not None:
        lines += explanation_lines(*explained)
    elif (results.get("federation") or {}).get("engine") == "deployment":
        lines += ["", "Reasons for the test rows: `deploy score <run> scoring.rows=test` "
                  "(the lender keeps the scores; that request's report.md says why)."]
    t = results["timing"]
    lines += ["", f"Wall time {t['wall_s']:.1f} s (training {t['train_s']:.1f} s).", ""]
    return "\n".join(lines)



def _metrics_lines(results: dict[str, Any]) -> list[str]:
    """Return the report's head: what ran on which rows, the metrics table, the stability."""
    ds, m = results["dataset"], results["metrics"]
    rows = ds["rows"]
    lines = [f"# Credit-risk run: {results['mode']} on {ds['name']}", "",
             f"**{results['mode']}**: {results['role']}.", "",
             f"Label `{ds['label']}`, seed {results['seed']}, model {results['model']['kind']} "
             f"({results['model']['parameters']:,} parameters). Rows: train {rows['train']:,}, "
             f"validation {rows['val']:,}, test {rows['test']:,} "
             f"(test default rate {ds['positive_rate']['test']:.1%}).", "", "## Metrics", ""]
    metric_rows = [[label, f"{m['test'][key]:.4f}", f"{m['val'].get(key, float('nan')):.4f}"]
                   for key, label in METRIC_LABELS if key in m["test"]]
    lines += _table(["metric", "test", "validation"], metric_rows)
    kept = (f"Best epoch: {m['best_epoch']}." if "best_epoch" in m
            else f"Rounds: {len(m.get('history', []))}.")
    reference = {"train": "train", "val": "validation"}[m["test"].get("psi_reference", "train")]
    return lines + ["", f"Population stability index, {reference} to test scores: "
                    f"{m['test']['psi']:.4f}. " + kept, "",
                    "![ROC, calibration and learning curve](plots.png)"]


def _parties_lines(results: dict[str, Any]) -> list[str]:
    """Return the federation's section (vertical or horizontal), else the pooled parties'."""
    ds, federation = results["dataset"], results.get("federation")
    if federation is not None and results["mode"] == "vertical":
        return _vertical_section(federation, ds["parties"], results["metrics"])
    if federation is not None:
        return _federation_section(federation, ds["parties"])
    if not ds["parties"]:
        return []
    return ["", "## Parties", "", *_table(
        ["party", "rows held", "applicants known", "columns in", "model columns", "used"],
        [[p, f"{v['rows']:,}", f"{v['applicants_known']:,}", str(v["source_columns"]),
          str(v["model_columns"]), "yes" if v["used"] else "no"]
         for p, v in ds["parties"].items()])]

REFERENCE_LABELS = {
    "logistic_regression": "logistic regression, the same columns (pooled for the reference)",
    "logistic_regression_lender": "logistic regression, the lender's columns",
    "centralized": "centralized model (pooled)", "lender_only": "the lender alone",
    "non_private": "the same federation without privacy"}
MARGIN = 0.02
"""A model this far below the logistic regression on the same columns gets a warning line."""


def _references_section(references: dict[str, Any], model_auc: float,
                        private: bool = False) -> list[str]:
    """Lay out the model's test AUC beside each reference's; warn when a simple one wins.

    >>> refs = {"logistic_regression": {"auc": 0.80, "ks": 0.4, "brier": 0.1}}
    >>> any("does better than this model" in line for line in _references_section(refs, 0.75))
    True
    >>> any("does better" in line for line in _references_section(refs, 0.75, private=True))
    False
    """
    lines = ["", "## References (same rows and seed)", ""]
    lines += _table(["reference", "test AUC", "this model minus it", "KS", "Brier"],
                    [[REFERENCE_LABELS.get(name, name.replace("_", " ")), f"{r['auc']:.4f}",
                      f"{model_auc - r['auc']:+.4f}", f"{r['ks']:.4f}", f"{r['brier']:.4f}"]
                     for name, r in references.items()])
    simple = references.get("logistic_regression")
    if private:  # the references train without privacy: a private model may trail them
        lines += ["", "The references train without differential privacy; part of any gap is "
                  "the price of this run's privacy."]
    elif simple is not None and model_auc < simple["auc"] - MARGIN:
        lines += ["", f"**A logistic regression on the same rows and columns does better than "
                  f"this model** (test AUC {simple['auc']:.4f} against {model_auc:.4f}). "
                  "See docs/running-experiments.md, \"Training budget\"."]
    return lines


def _federation_section(federation: dict[str, Any], parties: dict[str, Any]) -> list[str]:
    lines = ["", "## Federation", "",
             f"Strategy {federation['strategy']}, {federation['clients']} lenders, "
             f"{federation['completed_rounds']} of {federation['rounds']} rounds of "
             f"{federation['local_epochs']} local epoch(s); partition "
             f"{federation['partition']['scheme']} (alpha {federation['partition']['alpha']})."]
    if federation.get("resumed_from"):
        lines.append(f"Resumed from {federation['resumed_from']}.")
    if federation.get("stopped_after"):
        lines.append(f"Stopped after round {federation['stopped_after']} (federation.stop_after);"
                     " continue with resume=<this run directory>.")
    evaluation = federation.get("lender_evaluation", {})
    lines += [""] + _table(
        ["lender", "applicants", "training rows", "default rate", "own test AUC"],
        [[p, f"{v['rows']:,}", f"{v['train_rows']:,}",
          "-" if v["default_rate"] is None else f"{v['default_rate']:.1%}",
          f"{evaluation[p]['auc']:.4f}" if p in evaluation else "-"]
         for p, v in parties.items()])
    excluded = federation.get("excluded", [])
    if excluded:
        lines += ["", "Left out of rounds:", ""]
        lines += _table(["round", "party", "reason"],
                        [[str(e["round"]), e["party"], e["reason"]] for e in excluded])
    return lines


def _vertical_section(federation: dict[str, Any], parties: dict[str, Any],
                      metrics: dict[str, Any]) -> list[str]:
    lift = metrics.get("party_lift", {})
    comm = federation.get("communication", {})
    lines = ["", "## Vertical federation", "",
             f"Parties {', '.join(federation['parties'])}; {federation['epochs']} epochs of "
             f"{federation['exchanges_per_epoch']} exchange(s), "
             f"{federation.get('local_steps', 1)} step(s) per batch, "
             f"{federation['message_rounds']} message rounds in all (alignment included).",
             "", "Lift of a party: test AUC of the final model minus its test AUC when that "
             "party's embeddings are replaced by the \"unknown applicant\" vector.", ""]
    lines += _table(
        ["party", "rows held", "applicants known (PSI)", "lift (test AUC)", "messages",
         "MB sent", "MB received"],
        [[p, f"{v['rows']:,}", f"{v['applicants_known']:,}",
          f"{lift[p]:+.4f}" if p in lift else "-",
          str(comm.get(p, {}).get("messages_out", 0)),
          f"{comm.get(p, {}).get('bytes_out', 0) / 1e6:.1f}",
          f"{comm.get(p, {}).get('bytes_in', 0) / 1e6:.1f}"] for p, v in parties.items()])
    lists = federation.get("blacklists")
    if lists:
        lines += ["", "## Shared blacklists", "",
                  f"Looked up by private set intersection (mode `{lists['mode']}`): each holder "
                  "learned how many IDs the lender asked, and nothing about which; the lender "
                  + ("learned which of its applicants are listed (its inputs `on_list_<holder>` "
                     "and `blacklist_hits`)." if lists["mode"] == "lookup"
                     else "learned only how many are listed."), ""]
        lines += _table(["holder", "IDs on its list", "IDs asked", "applicants listed"],
                        [[h, f"{v['list_size']:,}", f"{v.get('asked', 0):,}",
                          f"{v.get('listed', 0):,}"] for h, v in lists["holders"].items()])
    return lines


def _scorecard_section(card: dict[str, Any]) -> list[str]:
    lines = ["", "## Score points and grades", "",
             f"Points = {card['offset']:.1f} - {card['factor']:.2f} x ln(odds of default): "
             f"{card['base_points']:g} points at {card['base_odds']:g}:1 good:bad, "
             f"{card['pdo']:g} more each time the odds of good double. Test rows by grade:", ""]
    rows = []
    lowest = min((g["min_points"] for g in card["test_grades"] if g["min_points"] is not None),
                 default=None)
    for g in card["test_grades"]:
        floor = (f"{g['min_points']:g} and up" if g["min_points"] is not None
                 else f"below {lowest:g}" if lowest is not None else "all")
        rate = f"{g['default_rate']:.2%}" if g["default_rate"] is not None else "-"
        rows.append([g["grade"], floor, f"{g['rows']:,}", f"{g['share']:.1%}", rate])
    return lines + _table(["grade", "points", "test rows", "share", "default rate"], rows)


def headline(privacy: dict[str, Any]) -> str:
    """Name the headline epsilon of a results.json ``privacy`` block.

    >>> headline({"mechanism": "label_dp+dpsgd", "largest_party": "lender", "epsilon": 6.0})
    'epsilon (largest party total: lender)'
    >>> headline({"mechanism": "central", "epsilon": 3.0})
    'epsilon (the largest ledger entry: central DP at record level)'
    """
    if privacy.get("mechanism") == "central":
        return "epsilon (the largest ledger entry: central DP at record level)"
    party = privacy.get("largest_party")
    return f"epsilon (largest party total: {party})" if party else "epsilon (largest party total)"


def _privacy_section(privacy: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Privacy", ""]
    if privacy is None:
        return lines + ["No differential privacy in this run."]
    if privacy.get("guarantee") is False:
        lines += [f"**{NO_GUARANTEE}.**", ""]
    lines += [f"Mechanism {privacy['mechanism']}: {headline(privacy)} {privacy['epsilon']:.3f}, "
              f"delta {privacy['delta']:.2e}.", ""]
    totals = privacy.get("party_totals") or {}
    if any(len(t["mechanisms"]) > 1 for t in totals.values()):
        lines += ["Per party (all of its mechanisms composed): "
                  + ", ".join(f"{p} epsilon {t['epsilon']:.3f} ({' + '.join(t['mechanisms'])})"
                              for p, t in totals.items()) + ".", ""]
    if "by_mechanism" in privacy:
        lines += ["Per mechanism (its largest entry; a party's mechanisms compose into its "
                  "total above): "
                  + ", ".join(f"{k} epsilon {v:.3f}" for k, v in privacy["by_mechanism"].items())
                  + ".", ""]
    lines += _table(["party", "epsilon", "delta", "noise multiplier", "sample rate", "steps",
                     "accountant"],
                    [[p, f"{v['epsilon']:.3f}", f"{v['delta']:.2e}",
                      f"{v['noise_multiplier']:.4f}", f"{v['sample_rate']:.4f}",
                      str(v["steps"]), v["accountant"]] for p, v in privacy["parties"].items()])
    for p, v in privacy["parties"].items():
        if v.get("flip_probability") is not None:
            lines.append(f"\n{p}: randomized response flips each training label with probability "
                         f"{v['flip_probability']:.4f}, once.")
        if v.get("sensitivity") is not None:
            lines.append(f"\n{p}: Gaussian noise of {v['noise_multiplier']:.3f} x sensitivity "
                         f"{v['sensitivity']:g} per release, {v['steps']} release(s).")
        if v.get("history") and len(v["history"]) > 1:
            lines.append(f"\n{p}: composed in RDP after the party's noisy summary (Gaussian, "
                         f"noise {v['history'][0][0]:.2f} x its sensitivity, released once).")
    for r in privacy.get("refusals", []):
        lines.append(f"\nRound {r['round']}: {r['reason']}.")
    lines.append("\nThe epsilon covers the training rows. The lender's validation and test rows "
                 "are used in the clear for early stopping, calibration and this report; set "
                 "sizes and the alignment's counts are outside every guarantee "
                 "(docs/privacy.md).")
    return lines


def _inversion_section(inversion: dict[str, Any], test_auc: float) -> list[str]:
    """Render how well the lender rebuilds each passive party's columns, next to the AUC.

    >>> lines = _inversion_section({"bureau": {"r2": {"util": 0.9, "n": None}, "mean_r2": 0.9,
    ...     "known_share": 0.5, "decoder": "mlp: MLP", "rows": 10, "known_rows": 10}}, 0.8)
    >>> lines[-1]
    '| bureau | 10 / 10 | 0.900 | util 0.90, n - |'
    """
    first = next(iter(inversion.values()))
    lines = ["", "## Embedding inversion", "",
             f"How well the lender, knowing the columns of {first['known_share']:.0%} of the "
             "customers it received embeddings for, rebuilds each passive party's columns for "
             f"the others (decoder {first['decoder']}); held-out R^2 per column, 1 gives the "
             "column away, 0 or below is no better than its mean. This run's test AUC: "
             f"{test_auc:.4f}.", ""]
    rows = []
    for party, v in inversion.items():
        per_column = ", ".join(f"{c} {'-' if r is None else f'{r:.2f}'}"
                               for c, r in v["r2"].items())
        mean = "-" if v["mean_r2"] is None else f"{v['mean_r2']:.3f}"
        rows.append([party, f"{v['known_rows']:,} / {v['rows']:,}", mean, per_column])
    return lines + _table(["party", "rows known / scored", "mean R^2", "R^2 per column"], rows)


def _audit_section(audit: dict[str, Any]) -> list[str]:
    m = audit["membership"]
    theory = ("unbounded" if m["theoretical_epsilon"] is None
              else f"{m['theoretical_epsilon']:.3f}")
    lines = ["", "## Empirical privacy audit", "",
             "Membership inference (loss threshold calibrated on held-out rows the model did "
             f"not train on at {m['target_fpr']:.0%} false positives; {m['members']:,} "
             f"training rows, label-stratified, against {m['non_members']:,} test rows):", ""]
    interval = m.get("attack_auc_interval")
    shown = (f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
    lines += _table(["theoretical epsilon", "empirical lower bound", "attack AUC",
                     f"attack AUC, {m['confidence']:.0%} interval", "TPR", "FPR"],
                    [[theory, f"{m['epsilon_lower_bound']:.3f}", f"{m['attack_auc']:.4f}",
                      shown, f"{m['tpr']:.4f}", f"{m['fpr']:.4f}"]])
    lines += ["", f"Theoretical epsilon: {m['theory']}. The lower bound holds with "
              f"{m['confidence']:.0%} confidence (Clopper-Pearson); an attack AUC near 0.5 means "
              "the attacker cannot tell members from non-members."]
    leakage = audit.get("label_leakage")
    if leakage:
        lines += ["", f"Label leakage from the gradients a passive party receives (label "
                  f"protection: {leakage['label_protection']}); AUC 0.5 means nothing leaks:", ""]
        lines += _table(["party", "rows", "norm attack AUC", "direction attack AUC"],
                        [[p, f"{v['rows']:,}", f"{v['norm_auc']:.4f}",
                          f"{v['direction_auc']:.4f}"] for p, v in leakage["parties"].items()])
    if audit.get("one_run"):
        lines += _one_run_section(audit["one_run"])
    if audit.get("rmia"):
        lines += _rmia_section(audit["rmia"])
    return lines


def _rmia_section(rmia: dict[str, Any]) -> list[str]:
    """Lay out RMIA's AUC and TPR at low FPR, with their intervals."""
    def interval(low_high: list[float]) -> str:
        return f"[{low_high[0]:.4f}, {low_high[1]:.4f}]"

    low = rmia["tpr_at_fpr"]
    lines = ["", f"RMIA on the final model ({rmia['reference_models']} reference models of "
             f"{rmia['reference_rows']:,} rows, {rmia['reference_epochs']} epochs each; "
             f"{rmia['members']:,} members against {rmia['non_members']:,} non-members; "
             f"threat model: {rmia['threat_model']}):", ""]
    lines += _table(["AUC", f"AUC {rmia['confidence']:.0%} interval (bootstrap)",
                     "TPR at 0.1% FPR [Clopper-Pearson]", "TPR at 1% FPR [Clopper-Pearson]"],
                    [[f"{rmia['attack_auc']:.4f}", interval(rmia["attack_auc_interval"]),
                      f"{low['0.001']['tpr']:.4f} {interval(low['0.001']['tpr_interval'])}",
                      f"{low['0.01']['tpr']:.4f} {interval(low['0.01']['tpr_interval'])}"]])
    return lines + ["", "A TPR whose interval lies above its FPR picks out members with near "
                    "certainty; one at the FPR means this attack found none, which does not "
                    "prove privacy."]


def _one_run_section(one: dict[str, Any]) -> list[str]:
    """Lay out the one-run canary audit next to the twin's accounted epsilon."""
    def claim(value: float | None) -> str:
        return "unbounded" if value is None else f"{value:.3f}"

    audits = [("membership (" + one["mechanism"] + ")", one)]
    if one.get("label"):
        audits.append(("label (randomized response)", one["label"]))
    lines = ["", f"One-run canary audit ({one['canaries']:,} canaries in a twin of "
             f"{one['party']}'s training that the shipped model never saw; threat model: "
             f"{one['threat_model']}):", ""]
    lines += _table(["secret bit", "accounted epsilon", "lower bound", "right / guesses",
                     "confidence"],
                    [[name, claim(a["accounted_epsilon"]), f"{a['epsilon_lower_bound']:.3f}",
                      f"{a['correct']} / {a['guesses']}", f"{a['confidence']:.0%}"]
                     for name, a in audits])
    return lines + ["", "A lower bound above the accounted epsilon means the mechanism does "
                    "not do what its ledger says; one below it proves no privacy."]
