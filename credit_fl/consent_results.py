"""The consent counts a simulated run reports, and the report's lines about them.

Each node applies its own records (:mod:`fl_client.consent_gate`); a simulation's runner can
read every party's disk, so it counts the same way for ``results.json`` (``dataset.consent``)
and ``scoring.json`` (``consent``), and cuts the lender's table as the lender's node did for the
row-level files it writes (``predictions.csv``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from credit_data.consent import PURPOSES
from credit_data.settings import LABEL_HOLDER, DataSettings
from credit_data.tables import Population
from fl_client.consent_gate import NO_RECORDS, consent_decision


def consent_summary(data: DataSettings, population: Population, parties: Iterable[str],
                    purpose: str) -> dict[str, Any] | None:
    """Return the run's consent counts per party, or None when no party has consent records.

    A party without a consent file is listed with ``records: false`` (all its rows used).
    """
    if not data.consent:
        return None
    out: dict[str, Any] = {"purpose": purpose, "dpv": PURPOSES[purpose], "parties": {}}
    for party in parties:
        if party not in population.tables:
            continue
        _, counts = consent_decision(population.tables[party], data.consent.get(party),
                                     purpose, data.id_column, LABEL_HOLDER)
        out["parties"][party] = ({"records": False} if counts is None
                                 else {"records": True, **counts})
    return out


def lender_consented(data: DataSettings, population: Population, purpose: str) -> Population:
    """Return the population with the lender's table cut as its node cuts it."""
    if LABEL_HOLDER not in data.consent or LABEL_HOLDER not in population.tables:
        return population
    kept, _ = consent_decision(population.tables[LABEL_HOLDER], data.consent[LABEL_HOLDER],
                               purpose, data.id_column, LABEL_HOLDER)
    return Population(population.name, {**population.tables, LABEL_HOLDER: kept},
                      population.truth)


def consented_population(data: DataSettings, population: Population,
                         purpose: str) -> Population:
    """Return the population with each party's table cut as its node cuts it for ``purpose``.

    What a runner hands the simulated nodes where it prepares their rows itself (monitoring's
    party indices, rerating's two periods, whose IDs it marks before scoring).
    """
    tables = {party: consent_decision(table, data.consent[party], purpose, data.id_column,
                                      LABEL_HOLDER)[0] if party in data.consent else table
              for party, table in population.tables.items()}
    return Population(population.name, tables, population.truth)


def consent_lines(consent: dict[str, Any] | None) -> list[str]:
    """Return the report's section on consent.

    >>> consent_lines(None)[-1]
    'No consent records: all rows used.'
    """
    lines = ["", "## Consent and purpose", ""]
    if consent is None:
        return lines + [NO_RECORDS.capitalize() + "."]
    lines += [f"Purpose `{consent['purpose']}` ({consent['dpv']}); each party used only the "
              "customers whose latest record grants it.", "",
              "| party | rows held | rows used | consented | withdrawn | no record |",
              "|---|---:|---:|---:|---:|---:|"]
    for party, c in consent["parties"].items():
        if not c["records"]:
            lines.append(f"| {party} | | | {NO_RECORDS} | | |")
        else:
            lines.append(f"| {party} | " + " | ".join(_count(c.get(k)) for k in (
                "rows_held", "rows_used", "consented", "withdrawn", "no_record")) + " |")
    return lines


def _count(value: int | None) -> str:
    """Format a count; a deployed node sends some only under its opt-in (None: not sent)."""
    return "not sent" if value is None else f"{value:,}"
