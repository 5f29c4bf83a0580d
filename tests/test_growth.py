"""Growth arithmetic against hand-computed vectors (REGULATORY.md §6.4)."""

import pytest

from cellfactory.batches import growth


@pytest.mark.parametrize(("seeded", "harvested", "expected"), [(1.0e5, 8.0e5, 3.000), (5.0e4, 1.2e6, 4.585),
                                                              (1.0e6, 3.2e7, 5.000)])
def test_population_doublings(seeded, harvested, expected):
    assert growth.population_doublings(seeded, harvested) == pytest.approx(expected, abs=1e-3)


def test_cumulative_pd_and_doubling_time_across_passages():
    first = growth.derive(cells_seeded=1e5, cells_harvested=8e5, hours_in_culture=24, growth_area_cm2=75,
                          previous_cumulative_pd=0)
    second = growth.derive(cells_seeded=5e4, cells_harvested=1.2e6, hours_in_culture=96, growth_area_cm2=175,
                           previous_cumulative_pd=first.cumulative_pd)
    third = growth.derive(cells_seeded=1e6, cells_harvested=3.2e7, hours_in_culture=120, growth_area_cm2=636,
                          previous_cumulative_pd=second.cumulative_pd)
    assert first.doubling_time_h == pytest.approx(8.0)
    assert third.cumulative_pd == pytest.approx(12.585, abs=1e-3)
    assert second.doubling_time_h == pytest.approx(96 / 4.585, abs=1e-2)
    assert first.seeding_density == pytest.approx(1e5 / 75)


def test_no_doubling_time_without_growth():
    assert growth.derive(cells_seeded=1e6, cells_harvested=9e5, hours_in_culture=48, growth_area_cm2=75,
                         previous_cumulative_pd=2).doubling_time_h is None


@pytest.mark.parametrize(("seeded", "harvested"), [(0, 1), (1, 0), (-5, 10)])
def test_counts_must_be_positive(seeded, harvested):
    with pytest.raises(ValueError):
        growth.population_doublings(seeded, harvested)


def test_growth_curve_renders_as_svg_and_drawing():
    from cellfactory.batches import charts

    series = [charts.Series("BG-UCMSC-2026-0001", [(0, 0), (3, 3.0), (6, 6.5)]),
              charts.Series("BG-UCMSC-2026-0002", [(0, 0), (4, 2.5)])]
    drawing = charts.growth_drawing(series)
    svg = charts.svg(drawing)
    assert svg.startswith("<svg") and "<script" not in svg and "sans-serif" in svg
    assert "BG-UCMSC-2026-0001" in svg and "BG-UCMSC-2026-0002" in svg and "cumulative PD" in svg
    empty = charts.svg(charts.growth_drawing([charts.Series("x", [])]))
    assert "No harvested passage yet" in empty
