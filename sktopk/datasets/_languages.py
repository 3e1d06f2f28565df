"""UDHR sample texts from Google Fonts' gflanguages: predict a text chunk's language."""

import functools
import re
import unicodedata
from importlib import metadata

import numpy as np

from ._base import check_bool, check_int, gini, import_optional, make_bunch

# Sample-text fields holding running text, longest first. The masthead_* fields
# are a few letters and poster_* a few words; both are left out, and so is the
# free-form ``note``. styles, tester and specimen_48 are mostly prefixes of the
# longer specimens, which the substring de-duplication below removes.
_FIELDS = (
    "specimen_16",
    "specimen_21",
    "specimen_32",
    "specimen_36",
    "specimen_48",
    "tester",
    "styles",
)

# A segment ends at a line break, after sentence-final punctuation followed by
# whitespace (Latin, danda, Armenian, Ethiopic, Arabic, Urdu, Myanmar, Khmer) or
# after a CJK full stop, exclamation or question mark (no space in CJK text).
_SEGMENT_BREAK = re.compile(
    r"\n|(?<=[.!?\u0964\u0965\u0589\u1362\u061f\u06d4\u104b\u17d4])\s+"
    r"|(?<=[\u3002\uff01\uff1f])\s*"
)

# Near-duplicate rule: a segment sharing this fraction of its character 5-grams
# with a longer kept segment of the same language is dropped.
_GRAM = 5
_NEAR_DUPLICATE = 0.7

_DESCR_TEMPLATE = """\
.. _languages_dataset:

UDHR sample texts: text chunk -> language
-----------------------------------------

Each sample is a short chunk of text (about ``chunk_length`` characters of
whole words); the target is its language and script, as a gflanguages id such
as ``'hr_Latn'`` in ``target_names`` (English names in ``language_names``).
The texts are mostly translations of the Universal Declaration of Human Rights
(UDHR), so every class says roughly the same thing and the task is to identify
the language. Scripts separate many classes at once, but close languages (e.g.
Bosnian, Croatian, Montenegrin and Serbian in Latin script, Danish and
Norwegian, Spanish and Asturian) are real confusions: a top-K problem with
balanced classes.

**This selection** (``chunk_length={chunk_length}``,
``max_chunks_per_language={max_chunks}``,
``min_chunks_per_language={min_chunks}``):

=================================  ==========================
Samples (chunks)                   {n_samples}
Classes (language/script ids)      {n_classes}
Chunks per class                   {count_min} to {count_max}
Gini coefficient of class sizes    {gini:.3f}
Mean chunk length (characters)     {mean_length:.1f}
Languages with sample text         {n_with_text}
Dropped: too little text           {n_dropped}
Dropped: duplicate of another id   {n_dropped_duplicate}
Chunks found in 2+ classes         {n_ambiguous}
=================================  ==========================

Languages dropped as duplicates: {duplicates}.

With gflanguages 0.7.11 and the default parameters (``chunk_length=40``, 20
chunks per language): 6700 chunks, 335 classes of exactly 20 chunks, out of
755 languages with a sample text (420 have too little text). As a reference,
character 1-4-gram tf-idf and a logistic regression (C=10) trained on a
stratified half reach about 0.88 top-1, 0.95 top-2 and 0.99 top-5 accuracy on
the other half; the most frequent confusions are Bosnian/Croatian,
Danish/Norwegian Bokmal, Walloon/Picard, Magahi/Bhojpuri, Bulgarian/Russian,
Scots/English, Minangkabau/Indonesian and Montenegrin/Serbian.

**Construction.** For each language with a ``sample_text`` the running-text
fields (``specimen_16``, ``specimen_21``, ``specimen_32``, ``specimen_36``,
``specimen_48``, ``tester``, ``styles``) are split into segments at line breaks
and after sentence-final punctuation, whitespace-normalised (Unicode NFC) and
de-duplicated, as these fields repeat each other heavily: taking segments
longest first, a segment is removed if it is contained in a kept segment of
the same language or shares at least 70% of its character 5-grams with one
(variants differing by punctuation, a typo or a truncation). About half of the
languages only have UDHR Article 1, repeated; they keep under 400 characters
and fall below the chunk threshold.

The remaining segments, in order, are cut into chunks of ``chunk_length // 2``
to ``chunk_length`` characters: a chunk grows word by word; when the next word
does not fit, the chunk is closed if it has at least ``chunk_length // 2``
characters, otherwise the word is cut to fill it (so only words of about half
a chunk or more are cut, which happens with text written without spaces, as
in Chinese, Japanese or Thai). A final piece shorter than ``chunk_length // 2``
is dropped, and a chunk equal to or contained in another chunk of the same
language is removed.

A language is kept if it yields at least ``min_chunks_per_language`` chunks
(by default ``max_chunks_per_language``, so the classes are exactly balanced)
and if no more than half of its chunks are already chunks of a kept language
(a few ids carry the same text as another id); it contributes its first
``max_chunks_per_language`` chunks. The same chunk can still appear under two
labels (e.g. a Bosnian and a Croatian sentence spelled identically): such
samples are kept, they are genuinely ambiguous. Samples are ordered by
language id, then text order; shuffle before splitting. Chunks of one language
never repeat text, but set phrases ("Everyone has the right to") recur between
them, as in any corpus.

**Source and licence.** Sample texts from the Google Fonts language metadata
package gflanguages {version} (https://github.com/googlefonts/lang), Apache
License 2.0. Most samples are taken from the translations of the Universal
Declaration of Human Rights collected by the UN (https://www.ohchr.org, UDHR
translation project); a few come from other sources named in their ``note``
field.
"""


def _char_grams(text, n=_GRAM):
    return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


def _segments(sample_text):
    """Whitespace-normalised, de-duplicated segments of one sample text, in order.

    Longest first, a segment is kept unless it is contained in a kept segment
    or shares at least ``_NEAR_DUPLICATE`` of its character 5-grams with one
    (variants differing by punctuation, a typo or a truncation).
    """
    segments = []
    for field in _FIELDS:
        for piece in _SEGMENT_BREAK.split(getattr(sample_text, field)):
            piece = " ".join(unicodedata.normalize("NFC", piece).split())
            if piece:
                segments.append(piece)
    unique = list(dict.fromkeys(segments))
    kept = []  # (position, text, grams)
    for position in sorted(range(len(unique)), key=lambda i: -len(unique[i])):
        text = unique[position]
        grams = _char_grams(text)
        if not any(
            text in other or len(grams & other_grams) >= _NEAR_DUPLICATE * len(grams)
            for _, other, other_grams in kept
        ):
            kept.append((position, text, grams))
    return [text for _, text, _ in sorted(kept, key=lambda item: item[0])]


@functools.lru_cache(maxsize=1)
def _read_languages():
    """Parse gflanguages once: (ids, names, segments per language, version)."""
    gflanguages = import_optional("gflanguages", "load_languages")
    languages = gflanguages.LoadLanguages()
    ids, names, texts = [], [], []
    for lang_id in sorted(languages):
        proto = languages[lang_id]
        if not proto.HasField("sample_text"):
            continue
        ids.append(lang_id)
        names.append(proto.name or lang_id)
        texts.append(tuple(_segments(proto.sample_text)))
    try:
        version = metadata.version("gflanguages")
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored installs
        version = "(unknown version)"
    return tuple(ids), tuple(names), tuple(texts), version


def _chunk(segments, chunk_length):
    """Cut the text into chunks of at most ``chunk_length`` characters.

    A chunk grows word by word. When the next word does not fit, the chunk is
    closed if it already has ``chunk_length // 2`` characters; otherwise the
    word (then a long run without spaces) is cut to fill it. So no chunk is
    shorter than ``chunk_length // 2``, and words are cut only when they are
    at least about half a chunk long.
    """
    half = chunk_length // 2
    chunks, current = [], ""
    for word in " ".join(segments).split():
        while word:
            room = chunk_length - len(current) - (1 if current else 0)
            if len(word) <= room:
                current = f"{current} {word}" if current else word
                break
            if len(current) >= half or room <= 0:
                chunks.append(current)
                current = ""
                continue
            piece, word = word[:room], word[room:]
            chunks.append(f"{current} {piece}" if current else piece)
            current = ""
    if current and len(current) >= half:
        chunks.append(current)
    unique = list(dict.fromkeys(chunks))
    # A recurring phrase can make a whole chunk part of another one: drop it.
    return [c for c in unique if not any(c != other and c in other for other in unique)]


@functools.lru_cache(maxsize=8)
def _build(chunk_length, max_chunks, min_chunks):
    """Chunks and targets for one parameter set, as immutable tuples."""
    ids, names, texts, version = _read_languages()
    owner = {}  # chunk -> first kept language index holding it
    kept, dropped_short, dropped_duplicate = [], 0, []
    for index, segments in enumerate(texts):
        chunks = _chunk(segments, chunk_length)
        if len(chunks) < min_chunks:
            dropped_short += 1
            continue
        overlap = {}
        for chunk in chunks:
            if chunk in owner:
                overlap[owner[chunk]] = overlap.get(owner[chunk], 0) + 1
        if overlap and 2 * max(overlap.values()) > len(chunks):
            twin = max(overlap, key=overlap.get)
            dropped_duplicate.append((ids[index], ids[twin]))
            continue
        for chunk in chunks:
            owner.setdefault(chunk, index)
        kept.append((index, chunks[:max_chunks]))
    data, target = [], []
    for label, (_, chunks) in enumerate(kept):
        data.extend(chunks)
        target.extend([label] * len(chunks))
    labels_per_chunk = {}
    for chunk, label in zip(data, target, strict=True):
        labels_per_chunk.setdefault(chunk, set()).add(label)
    n_ambiguous = sum(1 for chunk in data if len(labels_per_chunk[chunk]) > 1)
    return (
        tuple(data),
        tuple(target),
        tuple(ids[index] for index, _ in kept),
        tuple(names[index] for index, _ in kept),
        dict(
            n_with_text=len(ids),
            n_dropped_short=dropped_short,
            dropped_duplicate=tuple(dropped_duplicate),
            n_ambiguous=n_ambiguous,
        ),
        version,
    )


def load_languages(
    *,
    chunk_length=40,
    max_chunks_per_language=20,
    min_chunks_per_language=None,
    return_X_y=False,
    as_frame=False,
):
    """Load the UDHR sample-text dataset: predict the language of a short text chunk.

    A real many-class, balanced text classification problem (335 language/script
    ids of 20 chunks each with the defaults) with genuine confusions between
    close languages, built from the sample texts of the optional package
    ``gflanguages`` (Google Fonts, Apache-2.0). Segments repeated within a
    language are removed before chunking, so chunks of one language do not
    share text. See ``DESCR`` of the result for the construction, counts and
    licence.

    The parsed data is cached in the process; every call returns new objects.

    Parameters
    ----------
    chunk_length : int, default=40
        Maximum length of a chunk in characters, at least 2. Chunks are made of whole
        words and are at least ``chunk_length // 2`` long; only words of about
        half a chunk or more (runs without spaces, as in Chinese) are cut.
    max_chunks_per_language : int, default=20
        Each language contributes at most this many chunks (its first ones).
    min_chunks_per_language : int or None, default=None
        Languages with fewer chunks are dropped. None means
        ``max_chunks_per_language``, so that every class has exactly
        ``max_chunks_per_language`` samples.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        If True, ``data`` is a pandas Series of str, ``target`` a pandas Series
        of int and ``frame`` a DataFrame with both. Needs pandas.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : list of str of length n_samples, or pandas Series
            The text chunks.
        target : ndarray of shape (n_samples,) of int64, or pandas Series
            Index of the language in ``target_names``.
        frame : pandas DataFrame or None
            Only with ``as_frame=True``.
        target_names : list of str of length n_classes
            gflanguages ids (language and script, e.g. ``'hr_Latn'``), sorted.
        language_names : list of str of length n_classes
            English names, aligned with ``target_names``.
        class_counts : ndarray of shape (n_classes,)
            Number of chunks per class.
        feature_names : list of str
            ``['text']``.
        DESCR : str
            Description, construction, counts, source and licence.

    (data, target) : tuple if ``return_X_y`` is True
        The text chunks and their class indices.

    Raises
    ------
    ImportError
        If gflanguages is not installed.

    Examples
    --------
    >>> from sktopk.datasets import load_languages
    >>> languages = load_languages()
    >>> len(languages.data), len(languages.target_names)
    (6700, 335)
    >>> languages.target_names[:3]
    ['aa_Latn', 'ab_Cyrl', 'ace_Latn']
    >>> [len(chunk) <= 40 for chunk in languages.data[:3]]
    [True, True, True]
    >>> X, y = load_languages(chunk_length=60, max_chunks_per_language=10, return_X_y=True)
    >>> len(X), len(set(y.tolist()))
    (3640, 364)
    """
    # At least 2: chunks are cut at word boundaries and keep at least half of it.
    chunk_length = check_int(chunk_length, "chunk_length", minimum=2)
    max_chunks = check_int(max_chunks_per_language, "max_chunks_per_language", minimum=1)
    if min_chunks_per_language is None:
        min_chunks = max_chunks
    else:
        min_chunks = check_int(min_chunks_per_language, "min_chunks_per_language", minimum=1)
    return_X_y = check_bool(return_X_y, "return_X_y")
    as_frame = check_bool(as_frame, "as_frame")

    data, target, ids, names, stats, version = _build(chunk_length, max_chunks, min_chunks)
    target = np.array(target, dtype=np.int64)
    class_counts = np.bincount(target, minlength=len(ids)).astype(np.int64)
    duplicates = ", ".join(f"{a} (duplicate of {b})" for a, b in stats["dropped_duplicate"])
    descr = _DESCR_TEMPLATE.format(
        chunk_length=chunk_length,
        max_chunks=max_chunks,
        min_chunks=min_chunks,
        n_samples=len(data),
        n_classes=len(ids),
        count_min=int(class_counts.min()) if len(ids) else 0,
        count_max=int(class_counts.max()) if len(ids) else 0,
        gini=gini(class_counts),
        mean_length=float(np.mean([len(c) for c in data])) if data else 0.0,
        n_with_text=stats["n_with_text"],
        n_dropped=stats["n_dropped_short"],
        n_dropped_duplicate=len(stats["dropped_duplicate"]),
        duplicates=duplicates or "none",
        n_ambiguous=stats["n_ambiguous"],
        version=version,
    )
    bunch = make_bunch(
        texts=list(data),
        target=target,
        target_names=list(ids),
        feature_name="text",
        descr=descr,
        extras=dict(language_names=list(names), class_counts=class_counts),
        frame_columns={},
        as_frame=as_frame,
    )
    if return_X_y:
        return bunch.data, bunch.target
    return bunch
