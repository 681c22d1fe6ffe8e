"""The error book a headroom is read from: hand-computed excesses, quantiles and costs."""

import math

import pytest

from controller.policy.error_book import ErrorBook


def test_relative_excesses_and_their_quantile():
    book = ErrorBook(horizon=1000.0, floor=1.0)
    for made, level in enumerate((10.0, 10.0, 20.0, 0.5)):
        book.add(made, made + 100.0, level)
    assert book.score(99.0, 30.0) == []  # nothing due yet
    scored = book.score(200.0, 12.0)  # all four fall due, compared with 12 rps
    # (12 - 10) / 10, twice; (12 - 20) / 20; (12 - 0.5) / max(0.5, floor 1)
    assert scored == [(0, 0.2), (1, 0.2), (2, -0.4), (3, 11.5)]
    assert len(book) == 4
    assert book.at(0.0, default=9.0) == -0.4
    assert book.at(0.5, default=9.0) == 0.2
    assert book.at(1.0, default=9.0) == 11.5  # clamped to the largest
    assert book.provision(10.0, 0.5) == pytest.approx(12.0)  # 10 + 0.2 x 10


def test_sqrt_scale_grows_with_the_root_of_the_level():
    book = ErrorBook(horizon=1000.0, floor=4.0, scale="sqrt")
    assert book.unit(16.0) == pytest.approx(8.0)  # sqrt(16 x 4)
    assert book.unit(1.0) == pytest.approx(4.0)  # below the floor: the floor's own
    book.add(0.0, 10.0, 16.0)
    assert book.score(10.0, 20.0) == [(0.0, 0.5)]  # (20 - 16) / 8
    assert book.provision(64.0, 1.0) == pytest.approx(64.0 + 0.5 * math.sqrt(64 * 4))


def test_old_excesses_are_forgotten_after_the_horizon():
    book = ErrorBook(horizon=100.0, floor=1.0)
    book.add(0.0, 10.0, 10.0)
    book.score(10.0, 20.0)  # +1.0, kept from t = 10
    book.add(50.0, 150.0, 10.0)
    book.score(150.0, 10.0)  # 0.0 at t = 150; the first is older than 100 s now
    assert len(book) == 1 and book.at(1.0, default=9.0) == 0.0


def test_cover_cost_compares_what_two_forecasters_would_have_provisioned():
    """A level that follows noise needs a larger headroom on top of a higher mean level."""
    steady, chasing = ErrorBook(horizon=1e9, floor=1.0), ErrorBook(horizon=1e9, floor=1.0)
    loads = [10.0, 20.0] * 50  # the load one lead later alternates
    for i, load in enumerate(loads):
        steady.add(i, i + 1, 15.0)  # the mean
        chasing.add(i, i + 1, loads[i - 1] if i else 15.0)  # the last sample: always wrong
        steady.score(i + 1, load)
        chasing.score(i + 1, load)
    # steady: excesses -1/3 and +1/3, so covering all takes 15 x 4/3 = 20 rps;
    # chasing: levels 10 and 20, excesses +1 and -1/2, so covering all takes 2 x the level.
    assert steady.cover_cost(1.0) == pytest.approx(20.0)
    assert chasing.cover_cost(1.0) == pytest.approx(2 * sum([*loads[:-1], 15.0]) / 100, rel=0.01)
    assert steady.cover_cost(1.0) < chasing.cover_cost(1.0)
    assert ErrorBook(horizon=1.0, floor=1.0).cover_cost(0.5) == math.inf  # knows nothing yet


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="unknown error scale"):
        ErrorBook(horizon=1.0, floor=1.0, scale="log")
