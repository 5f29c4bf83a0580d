"""Growth arithmetic of an expansion, derived from the counts entered, never typed.

PD = log2(N_harvested / N_seeded); cumulative PD is the sum over the counted passages, from the first adherent
culture (a passage the process template declares "not counted", e.g. bone-marrow mononuclear cells seeded at P0,
keeps its PD but has no cumulative PD and adds nothing to the later ones); doubling time DT = t / PD (hours);
seeding density = N_seeded / growth area (cells/cm²). REGULATORY.md §4, §6.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORMULA_VERSION = "growth-2 (PD=log2(Nh/Ns); cPD=sum of counted PD; DT=t/PD; density=Ns/area)"


def population_doublings(cells_seeded: float, cells_harvested: float) -> float:
    if cells_seeded <= 0 or cells_harvested <= 0:
        raise ValueError("cell counts must be positive")
    return math.log2(cells_harvested / cells_seeded)


def doubling_time_hours(pd: float, hours_in_culture: float) -> float | None:
    """None when the cells did not double (PD <= 0): a doubling time would be meaningless."""
    if pd <= 0 or hours_in_culture <= 0:
        return None
    return hours_in_culture / pd


def seeding_density(cells_seeded: float, growth_area_cm2: float) -> float:
    if growth_area_cm2 <= 0:
        raise ValueError("growth area must be positive")
    return cells_seeded / growth_area_cm2


@dataclass(frozen=True)
class PassageGrowth:
    population_doublings: float
    cumulative_pd: float | None
    doubling_time_h: float | None
    seeding_density: float


def cumulative(doublings: list[tuple[float | None, bool]], *, start: float = 0.0) -> list[float | None]:
    """The cumulative PD after each passage, given (PD, counted) in order: None for a passage not counted or not
    harvested yet; a counted passage adds its PD to the counted ones before it, and to `start`, the doublings the
    cells carried in (a batch started from a bank vial)."""
    total = start
    found: list[float | None] = []
    for pd, counted in doublings:
        if pd is None or not counted:
            found.append(None)
            continue
        total += pd
        found.append(total)
    return found


def derive(*, cells_seeded: float, cells_harvested: float, hours_in_culture: float, growth_area_cm2: float,
           previous_cumulative_pd: float, counted: bool = True) -> PassageGrowth:
    pd = population_doublings(cells_seeded, cells_harvested)
    return PassageGrowth(
        population_doublings=pd,
        cumulative_pd=previous_cumulative_pd + pd if counted else None,
        doubling_time_h=doubling_time_hours(pd, hours_in_culture),
        seeding_density=seeding_density(cells_seeded, growth_area_cm2),
    )
